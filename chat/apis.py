from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from characters.cache import CHARACTER
from characters.models import Character
from characters.selectors import character_cached
from core.cache.readahead import readahead_of
from core.responses import json_bytes_response
from core.schema import errors
from core.serializers import StrictInput

from . import selectors, services
from .cache import CHAT_HISTORY, chat_messages_page
from .models import ChatSession


class MessageOutput(serializers.Serializer):
    seq = serializers.IntegerField()
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = serializers.CharField()
    created_at = serializers.DateTimeField()


class HistoryOutput(serializers.Serializer):
    session = serializers.CharField()
    messages = MessageOutput(many=True)
    has_more = serializers.BooleanField()
    next_before = serializers.IntegerField(allow_null=True)


class ExchangeOutput(serializers.Serializer):
    session = serializers.CharField()
    message = MessageOutput()
    reply = MessageOutput(allow_null=True, help_text="Always null: the reply is written by a worker.")
    reply_seq = serializers.IntegerField(help_text="The reply's seq: poll the history until it is there.")


def _require_character(name: str, readahead: dict | None = None) -> None:
    try:
        character_cached(name=name, readahead=readahead)
    except Character.DoesNotExist:
        raise exceptions.NotFound("No such character.") from None


class ChatSessionListApi(generics.ListAPIView):
    class OutputSerializer(serializers.Serializer):
        session = serializers.CharField(source="session_id")
        message_count = serializers.IntegerField(source="last_seq")
        created_at = serializers.DateTimeField()
        updated_at = serializers.DateTimeField()

        class Meta:
            ref_name = "ChatSession"

    serializer_class = OutputSerializer

    def get_queryset(self):
        _require_character(self.kwargs["character"])
        return selectors.chat_session_list(user_id=self.request.user.id, character=self.kwargs["character"])


class ChatMessagesApi(APIView):
    class InputSerializer(StrictInput):
        content = serializers.CharField(max_length=100_000, trim_whitespace=True)

        class Meta:
            ref_name = "ChatMessageInput"

    class QuerySerializer(serializers.Serializer):
        before = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False,
                                          help_text="Older messages: seq below this (from next_before).")
        limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=50,
                                         help_text="Page size for older messages.")

        class Meta:
            ref_name = "ChatHistoryQuery"

    cache_reads = (CHARACTER.read_as(name="character"), CHAT_HISTORY)
    cache_reads_skipped_by = ("before",)  # older pages come from the database

    @extend_schema(parameters=[QuerySerializer], responses={200: HistoryOutput, **errors(400)})
    def get(self, request, character: str, session: str):
        query = None
        # request.GET, not query_params (the same QueryDict): the cached-read lane (core.lane) calls
        # this method with Django's request.
        if request.META.get("QUERY_STRING"):  # the usual request has none: no serializer (nor QueryDict) to build
            query = self.QuerySerializer(data=request.GET)
            query.is_valid(raise_exception=True)
        before = query.validated_data.get("before") if query else None
        _require_character(character, readahead=readahead_of(request))  # a hidden character's chats are hidden too
        try:
            if before is None:  # the recent page: chat:history:{user}:{character}:{session}
                payload = selectors.chat_history_cached(user_id=request.user.id, character=character, session=session,
                                                        readahead=readahead_of(request))
                return json_bytes_response(payload, request, shared=False)
            chat = selectors.chat_session_get(user_id=request.user.id, character=character, session=session)
        except ChatSession.DoesNotExist:
            raise exceptions.NotFound("No such chat session.") from None
        body = chat_messages_page(session=chat, before=before, limit=query.validated_data["limit"])
        return Response(body)

    @extend_schema(request=InputSerializer, responses={202: ExchangeOutput, **errors(403)},
                   description="Stores the message and queues the character's reply (202). The reply is appended "
                               "to the session when ready: poll the history until a message with reply_seq is there.")
    def post(self, request, character: str, session: str):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body = services.chat_message_send(
            user_id=request.user.id, character=character, session=session, content=data.validated_data["content"]
        )
        return Response(body, status=202)
