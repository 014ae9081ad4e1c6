from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from characters.cache import CHARACTER
from characters.models import Character
from characters.selectors import character_cached
from core.cache.api import readahead_of
from core.http.responses import json_bytes_response
from core.http.schema import errors
from core.http.serializers import StrictInput

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


_SESSION_ID = OpenApiParameter(
    "session", OpenApiTypes.STR, OpenApiParameter.PATH, pattern=r"^[A-Za-z0-9_-]{1,64}$",
    description="Chosen by the client (1-64 letters, digits, '-' or '_'), e.g. a UUID: the first message "
                "posted under a new id starts that chat session; there is no separate call to create one.",
)


@extend_schema_view(get=extend_schema(description=(
    "The user's chat sessions with this character. To start a chat, pick a session id yourself and "
    "POST the first message to /api/chat/{character}/sessions/{session}/messages.")))
class ChatSessionListApi(generics.ListAPIView):
    class OutputSerializer(serializers.Serializer):
        session = serializers.CharField(source="session_id")
        message_count = serializers.IntegerField(source="last_seq")
        created_at = serializers.DateTimeField()
        updated_at = serializers.DateTimeField()

        class Meta:
            ref_name = "ChatSession"

    serializer_class = OutputSerializer

    def http_method_not_allowed(self, request, *args, **kwargs):
        # A POST here is the usual first guess at starting a chat: say how it is done.
        raise exceptions.MethodNotAllowed(request.method, detail=(
            f"Method \"{request.method}\" not allowed. To start a chat, choose a session id (1-64 letters, "
            f"digits, '-' or '_') and POST {{\"content\": \"...\"}} to "
            f"/api/chat/{kwargs.get('character', '{character}')}/sessions/{{session}}/messages."))

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

    @extend_schema(parameters=[QuerySerializer, _SESSION_ID], responses={200: HistoryOutput, **errors(400)},
                   description="A chat session's messages, the most recent first page (cached).")
    def get(self, request, character: str, session: str):
        query = None
        # request.GET, not query_params (the same QueryDict): the cached-read lane (core.http.lane) calls
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

    @extend_schema(request=InputSerializer, responses={202: ExchangeOutput, **errors(403)}, parameters=[_SESSION_ID],
                   description="Send a message: it is stored and the character's reply queued (202). The first "
                               "message under a new session id starts that session. The reply is appended to the "
                               "session when ready: poll the history until a message with reply_seq is there.",
                   examples=[OpenApiExample("A message", value={"content": "Hello! Who are you?"}, request_only=True)])
    def post(self, request, character: str, session: str):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body = services.chat_message_send(
            user_id=request.user.id, character=character, session=session, content=data.validated_data["content"]
        )
        return Response(body, status=202)
