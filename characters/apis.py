from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.views import APIView

from core.cache.api import readahead_of
from core.http.responses import json_bytes_response

from . import selectors
from .cache import CHARACTER, CHARACTERS_LIST
from .models import Character


class CharacterOutput(serializers.Serializer):
    name = serializers.CharField()
    display_name = serializers.CharField()
    description = serializers.CharField()
    greeting = serializers.CharField()
    avatar_url = serializers.CharField()
    is_premium = serializers.BooleanField()
    sort_order = serializers.IntegerField()


class CharacterListApi(APIView):
    cache_reads = (CHARACTERS_LIST,)

    @extend_schema(responses={200: CharacterOutput(many=True)})
    def get(self, request):
        return json_bytes_response(selectors.character_list_cached(readahead=readahead_of(request)), request, shared=True)


class CharacterDetailApi(APIView):
    cache_reads = (CHARACTER,)

    @extend_schema(responses={200: CharacterOutput})
    def get(self, request, name: str):
        try:
            payload = selectors.character_cached(name=name, readahead=readahead_of(request))
        except Character.DoesNotExist:
            raise exceptions.NotFound("No such character.") from None
        return json_bytes_response(payload, request, shared=True)
