"""Reads of chat sessions and messages. The cached family lives in chat/cache.py."""

from __future__ import annotations

from django.db.models import QuerySet

from core.cache.api import Payload, fetch

from .cache import CHAT_HISTORY
from .models import ChatSession


def chat_session_get(*, user_id: int, character: str, session: str) -> ChatSession:
    """Raises ChatSession.DoesNotExist: another user's session is as unknown as a missing one."""
    return ChatSession.objects.get(user_id=user_id, character__name=character, session_id=session)


def chat_history_cached(*, user_id: int, character: str, session: str, readahead: dict | None = None) -> Payload:
    """``chat:history:{user_id}:{character}:{session}``: the most recent messages, oldest first."""
    return fetch(CHAT_HISTORY, readahead=readahead, user_id=user_id, character=character, session=session)


def chat_session_list(*, user_id: int, character: str) -> QuerySet[ChatSession]:
    return ChatSession.objects.filter(user_id=user_id, character__name=character).order_by("-updated_at", "-id")
