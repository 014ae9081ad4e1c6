from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from core.cache import registry
from core.cache.store import Payload, fetch
from core.formatting import iso_utc

from .models import ChatMessage, ChatSession


def message_payload(message: ChatMessage) -> dict:
    return {
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "created_at": iso_utc(message.created_at),
    }


def chat_session_get(*, user_id: int, character: str, session: str) -> ChatSession:
    """Raises ChatSession.DoesNotExist: another user's session is as unknown as a missing one."""
    return ChatSession.objects.get(user_id=user_id, character__name=character, session_id=session)


def chat_messages_page(*, session: ChatSession, before: int | None, limit: int) -> dict:
    messages = ChatMessage.objects.filter(session=session)
    if before is not None:
        messages = messages.filter(seq__lt=before)
    page = list(messages.order_by("-seq")[: limit + 1])
    has_more = len(page) > limit
    page = page[:limit][::-1]
    return {
        "session": session.session_id,
        "messages": [message_payload(m) for m in page],
        "has_more": has_more,
        "next_before": page[0].seq if has_more else None,  # pass as ?before= for older messages
    }


def chat_history_payload(*, user_id: int, character: str, session: str) -> dict:
    """``chat:history:{user_id}:{character}:{session}``: the most recent messages, oldest first."""
    chat = chat_session_get(user_id=user_id, character=character, session=session)
    return chat_messages_page(session=chat, before=None, limit=settings.CHAT_HISTORY_CACHED_MESSAGES)


def chat_history_cached(*, user_id: int, character: str, session: str, readahead: dict | None = None) -> Payload:
    return fetch(registry.CHAT_HISTORY, readahead=readahead, user_id=user_id, character=character, session=session)


def chat_session_list(*, user_id: int, character: str) -> QuerySet[ChatSession]:
    return ChatSession.objects.filter(user_id=user_id, character__name=character).order_by("-updated_at", "-id")
