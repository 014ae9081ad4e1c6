"""Chat writes: the user's message and the character's reply, in order, within the plan's limits."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework import exceptions

from characters.models import Character
from characters.selectors import character_get_active, character_persona
from core.cache.store import amending
from core.clock import day_start
from subscriptions.cache import stats_after_use, stats_target
from subscriptions.services import usage_count

from .cache import history_target, history_with, invalidate_chat_history, message_payload
from .models import ChatMessage, ChatSession

logger = logging.getLogger(__name__)

_CONTEXT_MESSAGES = 20
NO_REPLY = "(no answer right now; please try again)"


def _responder():
    return import_string(settings.CHAT_RESPONDER)()


def chat_message_send(*, user_id: int, character: str, session: str, content: str) -> dict:
    """Store the message and the reply; returns both. Creates the session on first use.

    The user's message commits first with two sequence numbers reserved (its own and the
    reply's), so concurrent posts keep a strict order; the responder runs after, outside any
    transaction, and its reply takes the reserved number.
    """
    try:
        premium = character_get_active(name=character)["is_premium"]  # cached (character:{name})
    except Character.DoesNotExist:
        raise exceptions.NotFound("No such character.") from None
    if len(content) > settings.CHAT_MAX_MESSAGE_LENGTH:
        raise exceptions.ValidationError({"content": [f"At most {settings.CHAT_MAX_MESSAGE_LENGTH} characters."]})

    mine = ChatMessage(user_id=user_id, role=ChatMessage.Role.USER, content=content, created_at=timezone.now())
    chat = history_target(user_id=user_id, character=character, session=session)
    # The cached history and stats take the new message and count rather than being deleted, so
    # the next read of either still hits (store.amending).
    with amending(chat, stats_target(user_id=user_id)) as (history_key, stats_key):
        with transaction.atomic():
            usage_count(user_id=user_id, kind="messages", premium=premium)
            persona = character_persona(name=character)  # from the row: the persona prompt is never cached
            if persona is None:  # deactivated since it was cached: nothing is written
                raise exceptions.NotFound("No such character.")
            reply_seq = _message_store(mine, character_id=persona.pop("id"), session=session)
            context = _context_before(mine)
            # No save signal was sent: the history key is invalidated here, with the names at hand.
            invalidate_chat_history(user_id=user_id, character=character, session=session)
        history_key.change(history_with([message_payload(mine)]))
        stats_key.change(stats_after_use(kind="messages", day=day_start(mine.created_at).date()))
    history = [message_payload(m) for m in context]
    try:
        reply = _responder().reply(character=persona, history=history, message=content)
    except Exception:  # the user's message is stored: answer it with a placeholder, keep the order
        logger.warning("chat responder failed for session %s", mine.session_id, exc_info=True)
        reply = NO_REPLY
    theirs = ChatMessage(session_id=mine.session_id, user_id=user_id, seq=reply_seq, role=ChatMessage.Role.ASSISTANT,
                         content=reply, created_at=timezone.now())
    with amending(chat) as (history_key,), transaction.atomic():
        ChatMessage.objects.bulk_create([theirs])
        invalidate_chat_history(user_id=user_id, character=character, session=session)
        history_key.change(history_with([message_payload(theirs)]))
    return {"session": session, "message": message_payload(mine), "reply": message_payload(theirs)}


def _message_store(mine: ChatMessage, *, character_id: int, session: str) -> int:
    """Create the session or move its counter on by two (the message's seq and the reply's), then
    insert the message; returns the reply's seq. The update holds the session row's lock until
    the message commits, so concurrent posts keep a strict order. ``mine`` gets its id, session
    and seq."""
    now = mine.created_at
    sessions = ChatSession.objects.filter(user_id=mine.user_id, character_id=character_id, session_id=session)
    if not sessions.update(last_seq=F("last_seq") + 2, updated_at=now):
        # The session's first message (a concurrent first post may create the row too).
        ChatSession.objects.bulk_create([ChatSession(user_id=mine.user_id, character_id=character_id,
                                                     session_id=session, created_at=now, updated_at=now)],
                                        ignore_conflicts=True)
        sessions.update(last_seq=F("last_seq") + 2, updated_at=now)
    mine.session_id, last_seq = sessions.values_list("id", "last_seq").get()
    mine.seq = last_seq - 1
    ChatMessage.objects.bulk_create([mine])  # no post_save: the caller amends the history key
    return last_seq


def _context_before(mine: ChatMessage) -> list[ChatMessage]:
    """The responder's context: the session's messages before ``mine``, oldest first."""
    before = (ChatMessage.objects.filter(session_id=mine.session_id, seq__lt=mine.seq).order_by("-seq")
              .only("seq", "role", "content", "created_at")[:_CONTEXT_MESSAGES])
    return list(before)[::-1]
