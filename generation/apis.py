from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.cache.api import readahead_of
from core.http.responses import json_bytes_response
from core.http.schema import errors
from core.http.serializers import StrictInput

from . import selectors, services
from .cache import GENERATION_SETTINGS, GENERATION_STATUS, generation_payload
from .models import SIZES, Generation


class SettingsOutput(serializers.Serializer):
    default_model = serializers.CharField()
    allowed_sizes = serializers.ListField(child=serializers.ChoiceField(choices=SIZES))
    steps = serializers.IntegerField()
    max_steps = serializers.IntegerField()
    guidance = serializers.FloatField()
    cost_per_generation = serializers.IntegerField()
    max_prompt_length = serializers.IntegerField()
    enabled = serializers.BooleanField()


class GenerationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["pending", "running", "completed", "failed"],
                                     help_text="pending (queued), running (a worker has it), completed, failed "
                                               "(coins and daily use given back).")
    prompt = serializers.CharField()
    character = serializers.CharField(allow_null=True)
    parameters = serializers.DictField()
    cost = serializers.IntegerField()
    result = serializers.DictField()
    created_at = serializers.DateTimeField()


class GenerationSettingsApi(APIView):
    cache_reads = (GENERATION_SETTINGS,)

    @extend_schema(responses={200: SettingsOutput})
    def get(self, request):
        payload = selectors.generation_settings_cached(readahead=readahead_of(request))
        return json_bytes_response(payload, request, shared=True)


class GenerationApi(generics.ListAPIView):
    class InputSerializer(StrictInput):
        prompt = serializers.CharField(max_length=10000, trim_whitespace=True)
        character = serializers.SlugField(max_length=64, required=False, allow_null=True)
        size = serializers.ChoiceField(choices=SIZES, required=False,
                                       help_text="Default: the first of the settings' allowed_sizes that the image "
                                                 "model renders.")
        steps = serializers.IntegerField(min_value=1, max_value=1000, required=False)
        guidance = serializers.FloatField(min_value=0, max_value=50, required=False)
        seed = serializers.IntegerField(min_value=0, max_value=2**32 - 1, required=False, allow_null=True)

        class Meta:
            ref_name = "GenerationInput"

    class ListOutput(GenerationOutput):
        pass

    serializer_class = GenerationOutput

    def get_queryset(self):
        return selectors.generation_list(user_id=self.request.user.id)

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([generation_payload(g) for g in page])

    @extend_schema(
        request=InputSerializer,
        responses={202: GenerationOutput, **errors(402, 403, 409)},
        description="Charges and queues the generation: the answer is the pending generation (202); poll "
                    "GET /api/generations/{id} until it is completed or failed.",
        parameters=[OpenApiParameter("Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": 100},
                                     OpenApiParameter.HEADER, required=False,
                                     description="Retries with the same key charge once and return the first result.")],
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 100:
            raise exceptions.ValidationError({"Idempotency-Key": ["Between 1 and 100 characters."]})
        body, _created = services.generation_create(user_id=request.user.id, idempotency_key=key, **data.validated_data)
        # 202 for a new generation and for a retry's replay alike: either way it may still be rendering.
        return Response(body, status=202, headers={"Location": f"/api/generations/{body['id']}"})


class GenerationDetailApi(APIView):
    """One generation: its status while a worker renders it, then its result (cached:
    generation:status:{user_id}:{generation_id}, deleted when its job starts and ends)."""

    cache_reads = (GENERATION_STATUS,)

    @extend_schema(responses={200: GenerationOutput, **errors(404)})
    def get(self, request, generation_id: int):
        if generation_id > 2**63 - 1:  # beyond any id (and a 64-bit column)
            raise exceptions.NotFound("No such generation.")
        try:
            payload = selectors.generation_status_cached(user_id=request.user.id, generation_id=generation_id,
                                                         readahead=readahead_of(request))
        except Generation.DoesNotExist:
            raise exceptions.NotFound("No such generation.") from None
        return json_bytes_response(payload, request, shared=False)
