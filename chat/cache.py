"""The chat cache family, ``chat:history:{user_id}:{character}:{session}``: its value, its
invalidation, and what warm-up fills. Registered in ChatConfig.ready()."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
from django.conf import settings
from django.db.models import TextField, Window
from django.db.models.functions import Cast, RowNumber

from characters.signals import character_renamed
from core.cache.api import (
    Amendment,
    KeyFamily,
    Page,
    Parts,
    Version,
    WarmScope,
    connect_receivers,
    invalidate,
    invalidates,
    on,
    register,
    register_activity,
)
from core.http.formatting import iso_utc

from .models import ChatMessage, ChatSession


def message_payload(message: ChatMessage) -> dict:
    return message_payload_of(message.seq, message.role, message.content, message.created_at)


def message_payload_of(seq: int, role: str, content: str, created_at: datetime) -> dict:
    """message_payload from a message's columns (no model instance built)."""
    return {
        "seq": seq,
        "role": role,
        "content": content,
        "created_at": iso_utc(created_at),
    }


def chat_messages_page(*, session: ChatSession, before: int | None, limit: int) -> dict:
    """Up to ``limit`` messages below seq ``before`` (the most recent without it), oldest first."""
    messages = ChatMessage.objects.filter(session=session)
    if before is not None:
        messages = messages.filter(seq__lt=before)
    return _page_of(session.session_id, [message_payload(m) for m in messages.order_by("-seq")[: limit + 1]],
                    limit=limit)


def _page_of(session_id: str, newest_first: list[dict], *, limit: int, older: bool = False) -> dict:
    """The page from up to ``limit + 1`` messages (message_payload), newest first: one more than
    the page, or ``older``, tells there are older ones."""
    has_more = older or len(newest_first) > limit
    page = newest_first[:limit][::-1]
    return {
        "session": session_id,
        "messages": page,
        "has_more": has_more,
        "next_before": page[0]["seq"] if has_more else None,  # pass as ?before= for older messages
    }


def chat_history_payload(*, user_id: int, character: str, session: str) -> dict:
    """The most recent messages of one session, oldest first. Raises ChatSession.DoesNotExist:
    another user's session is as unknown as a missing one."""
    chat = ChatSession.objects.get(user_id=user_id, character__name=character, session_id=session)
    return chat_messages_page(session=chat, before=None, limit=settings.CHAT_HISTORY_CACHED_MESSAGES)


def chat_history_payloads(parts_list: list[Parts]) -> dict[int, dict]:
    """chat_history_payload for many keys (warm-up): two queries, the sessions, then the newest
    ``limit + 1`` messages of each at once (ROW_NUMBER() OVER (PARTITION BY session ORDER BY seq
    DESC)). A missing session is left out, as its loader raises."""
    limit = settings.CHAT_HISTORY_CACHED_MESSAGES
    wanted = {(parts["user_id"], parts["character"], parts["session"]) for parts in parts_list}
    # A superset of the wanted sessions (any of these users with any wanted name and id), narrowed
    # to the wanted ones before their messages are read.
    rows = ChatSession.objects.filter(
        user_id__in={user_id for user_id, _, _ in wanted},
        character__name__in={character for _, character, _ in wanted},
        session_id__in={session for _, _, session in wanted},
    ).values_list("id", "user_id", "character__name", "session_id")
    sessions = {(user_id, character, session): pk for pk, user_id, character, session in rows
                if (user_id, character, session) in wanted}
    newest_first: dict[int, list[dict]] = {pk: [] for pk in sessions.values()}
    # Tuples, not models, and created_at as text parsed by datetime.fromisoformat (in C): Django's
    # timestamptz loader parses in Python and costs 4x the rest of the row. The same instant, in
    # UTC as the loader gives it, so iso_utc writes the same string.
    messages = (ChatMessage.objects.filter(session_id__in=newest_first)
                .alias(rank=Window(RowNumber(), partition_by="session_id", order_by="-seq"))
                .filter(rank__lte=limit + 1).order_by("session_id", "-seq")
                .annotate(created=Cast("created_at", TextField()))
                .values_list("session_id", "seq", "role", "content", "created"))
    for pk, seq, role, content, created in messages:
        newest_first[pk].append(message_payload_of(seq, role, content, datetime.fromisoformat(created).astimezone(UTC)))
    found = {at: sessions.get((parts["user_id"], parts["character"], parts["session"]))
             for at, parts in enumerate(parts_list)}
    return {at: _page_of(parts_list[at]["session"], newest_first[pk], limit=limit)
            for at, pk in found.items() if pk is not None}


def _recent_sessions(scope: WarmScope) -> Iterable[Parts]:
    sessions = ChatSession.objects.filter(user_id__in=scope.user_ids)
    if scope.since is not None:
        sessions = sessions.filter(updated_at__gte=scope.since)
    rows = sessions.order_by("id").values_list("user_id", "character__name", "session_id")
    return ({"user_id": user_id, "character": character, "session": session} for user_id, character, session in rows)


# History keys carry the character's name: a rename must not leave the old name's histories to be
# served again if a character takes that name (a new one, or the renamed one back). One version key
# per name, in the name's slot (beside character:{name}, read with it), instead of one delete per
# session.
CHAT_VERSION = Version(name="chat:version", template="chat:version:{character}", tag="character",
                       holds="the version of the chat histories under one character name")

CHAT_HISTORY = KeyFamily(
    name="chat:history", template="chat:history:{user_id}:{character}:{session}", ttl_setting="CACHE_TTL_CHAT_HISTORY",
    default_ttl=600, loader=chat_history_payload, bulk_loader=chat_history_payloads,
    holds="recent messages of one chat session",
    enumerate=_recent_sessions, tag="user_id", version=CHAT_VERSION,
    # A new message is appended to the cached page inside Redis: a post sends the message, not the page.
    page=Page(items="messages", order="seq", cap_setting="CHAT_HISTORY_CACHED_MESSAGES"),
)


def history_target(*, user_id: int, character: str, session: str) -> tuple[KeyFamily, Parts]:
    return (CHAT_HISTORY, {"user_id": user_id, "character": character, "session": session})


def history_append(history: Amendment, message: ChatMessage) -> None:
    """The cached history once this new message is in (amend_after_commit): Redis appends what
    message_payload writes to the page, as chat_history_payload would load it."""
    history.append(orjson.dumps(message_payload(message)), order=message.seq)


@invalidates(CHAT_HISTORY, when="a new message in that session")
def invalidate_chat_history(*, user_id: int, character: str, session: str) -> None:
    """A new message in that session (written with bulk_create, which sends no signal)."""
    invalidate(history_target(user_id=user_id, character=character, session=session))


@invalidates(CHAT_HISTORY, triggers=[on("post_save", "chat.ChatMessage"), on("post_delete", "chat.ChatMessage")])
def flush_message(*, instance: ChatMessage, **kwargs: object) -> None:
    """A message saved or deleted one by one (the admin, a cascade)."""
    row = ChatSession.objects.filter(pk=instance.session_id).values_list("user_id", "character__name", "session_id")
    for user_id, character, session in row:
        invalidate_chat_history(user_id=user_id, character=character, session=session)


@invalidates(CHAT_HISTORY, CHAT_VERSION, triggers=[on("character_renamed", signal=character_renamed)])
def flush_histories_of_renamed_character(*, old_name: str, **kwargs: object) -> None:
    # Every history under the old name at once: one key, however many sessions it has.
    invalidate((CHAT_VERSION, {"character": old_name}))


def _active_users(since: datetime) -> Iterable[int]:
    # order_by(): DISTINCT with the model's ordering would select the ordering's columns too (a row per message)
    return ChatMessage.objects.filter(created_at__gte=since).order_by().values_list("user_id", flat=True).distinct()


def connect() -> None:
    register(CHAT_HISTORY)
    register_activity("chat", _active_users)
    connect_receivers(flush_message, flush_histories_of_renamed_character)
