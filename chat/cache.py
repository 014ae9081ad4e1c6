"""The chat cache family, ``chat:history:{user_id}:{character}:{session}``: its value, its
invalidation, and what warm-up fills. Registered in ChatConfig.ready()."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.conf import settings

from characters.signals import character_renamed
from core.cache import registry
from core.cache.family import KeyFamily, Parts, WarmScope
from core.cache.registry import invalidates, on
from core.cache.store import Change, invalidate
from core.formatting import iso_utc

from .models import ChatMessage, ChatSession


def message_payload(message: ChatMessage) -> dict:
    return {
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "created_at": iso_utc(message.created_at),
    }


def chat_messages_page(*, session: ChatSession, before: int | None, limit: int) -> dict:
    """Up to ``limit`` messages below seq ``before`` (the most recent without it), oldest first."""
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
    """The most recent messages of one session, oldest first. Raises ChatSession.DoesNotExist:
    another user's session is as unknown as a missing one."""
    chat = ChatSession.objects.get(user_id=user_id, character__name=character, session_id=session)
    return chat_messages_page(session=chat, before=None, limit=settings.CHAT_HISTORY_CACHED_MESSAGES)


def _recent_sessions(scope: WarmScope) -> Iterable[Parts]:
    sessions = ChatSession.objects.filter(user_id__in=scope.user_ids)
    if scope.since is not None:
        sessions = sessions.filter(updated_at__gte=scope.since)
    rows = sessions.order_by("id").values_list("user_id", "character__name", "session_id")
    return ({"user_id": user_id, "character": character, "session": session} for user_id, character, session in rows)


CHAT_HISTORY = KeyFamily(
    name="chat:history", template="chat:history:{user_id}:{character}:{session}", ttl_setting="CACHE_TTL_CHAT_HISTORY",
    default_ttl=600, loader=chat_history_payload, holds="recent messages of one chat session",
    enumerate=_recent_sessions, tag="user_id",
)


def history_target(*, user_id: int, character: str, session: str) -> tuple[KeyFamily, Parts]:
    return (CHAT_HISTORY, {"user_id": user_id, "character": character, "session": session})


def history_with(messages: list[dict]) -> Change:
    """The cached history once these new messages (message_payload) are in: what
    chat_history_payload would load, worked out from the cached page (store.amending)."""

    def change(history: dict) -> dict:
        limit = settings.CHAT_HISTORY_CACHED_MESSAGES
        by_seq = {message["seq"]: message for message in (*history["messages"], *messages)}
        merged = [by_seq[seq] for seq in sorted(by_seq)]
        has_more = history["has_more"] or len(merged) > limit
        page = merged[-limit:]
        return {**history, "messages": page, "has_more": has_more, "next_before": page[0]["seq"] if has_more else None}

    return change


@invalidates(CHAT_HISTORY, when="a new message in that session")
def invalidate_chat_history(*, user_id: int, character: str, session: str) -> None:
    """A new message in that session (written with bulk_create, which sends no signal)."""
    invalidate((CHAT_HISTORY, {"user_id": user_id, "character": character, "session": session}))


@invalidates(CHAT_HISTORY, triggers=[on("post_save", "chat.ChatMessage"), on("post_delete", "chat.ChatMessage")])
def flush_message(*, instance: ChatMessage, **kwargs: object) -> None:
    """A message saved or deleted one by one (the admin, a cascade)."""
    row = ChatSession.objects.filter(pk=instance.session_id).values_list("user_id", "character__name", "session_id")
    for user_id, character, session in row:
        invalidate_chat_history(user_id=user_id, character=character, session=session)


@invalidates(CHAT_HISTORY, triggers=[on("character_renamed", signal=character_renamed)])
def flush_histories_of_renamed_character(*, character_id: int, old_name: str, **kwargs: object) -> None:
    # History keys carry the name: a rename must not leave the old name's histories behind, to
    # be served again if a new character takes that name.
    sessions = ChatSession.objects.filter(character_id=character_id).values_list("user_id", "session_id")
    invalidate(*(
        (CHAT_HISTORY, {"user_id": user_id, "character": old_name, "session": session})
        for user_id, session in sessions
    ))


def _active_users(since: datetime) -> Iterable[int]:
    return ChatMessage.objects.filter(created_at__gte=since).values_list("user_id", flat=True).distinct()


def connect() -> None:
    registry.register(CHAT_HISTORY)
    registry.register_activity("chat", _active_users)
    registry.connect_receivers(flush_message, flush_histories_of_renamed_character)
