"""Chat writes: the user's message and the character's reply, in order, within the plan's limits."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework import exceptions

from characters.models import Character
from core.exceptions import PlanForbids
from subscriptions.selectors import subscription_require
from subscriptions.services import usage_consume

from .cache import invalidate_chat_history, message_payload
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
    char = (
        Character.objects.filter(name=character, is_active=True)
        .only("id", "name", "display_name", "greeting", "persona_prompt", "is_premium")
        .first()
    )
    if char is None:
        raise exceptions.NotFound("No such character.")
    if len(content) > settings.CHAT_MAX_MESSAGE_LENGTH:
        raise exceptions.ValidationError({"content": [f"At most {settings.CHAT_MAX_MESSAGE_LENGTH} characters."]})
    plan = subscription_require(user_id=user_id, premium=char.is_premium)

    now = timezone.now()
    with transaction.atomic():
        if usage_consume(user_id=user_id, kind="messages", limit=plan["daily_message_limit"]) is None:
            raise PlanForbids("Daily message limit reached.", code="daily_message_limit")
        session_pk, reply_seq = _reserve_seqs(user_id=user_id, character_id=char.id, session=session, now=now)
        mine = ChatMessage(session_id=session_pk, user_id=user_id, seq=reply_seq - 1,
                           role=ChatMessage.Role.USER, content=content, created_at=now)
        # bulk_create sends no signal: the history key is invalidated here, with the names at hand.
        ChatMessage.objects.bulk_create([mine])
        invalidate_chat_history(user_id=user_id, character=character, session=session)

    history = [message_payload(m) for m in reversed(
        ChatMessage.objects.filter(session_id=session_pk, seq__lt=mine.seq).order_by("-seq")[:_CONTEXT_MESSAGES]
    )]
    persona = {"name": char.name, "display_name": char.display_name,
               "greeting": char.greeting, "persona_prompt": char.persona_prompt}
    try:
        reply = _responder().reply(character=persona, history=history, message=content)
    except Exception:  # the user's message is stored: answer it with a placeholder, keep the order
        logger.warning("chat responder failed for session %s", session_pk, exc_info=True)
        reply = NO_REPLY
    theirs = ChatMessage(session_id=session_pk, user_id=user_id, seq=reply_seq, role=ChatMessage.Role.ASSISTANT,
                         content=reply, created_at=timezone.now())
    with transaction.atomic():
        ChatMessage.objects.bulk_create([theirs])
        invalidate_chat_history(user_id=user_id, character=character, session=session)
    return {"session": session, "message": message_payload(mine), "reply": message_payload(theirs)}


def _reserve_seqs(*, user_id: int, character_id: int, session: str, now) -> tuple[int, int]:
    """Create the session or move its counter on by two, in one statement: (session id, the
    reply's seq). The row lock it takes lasts only until the message commits."""
    table = connection.ops.quote_name(ChatSession._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, character_id, session_id, last_seq, created_at, updated_at)"
            " VALUES (%s, %s, %s, 2, %s, %s)"
            f" ON CONFLICT (user_id, character_id, session_id) DO UPDATE"
            f" SET last_seq = {table}.last_seq + 2, updated_at = EXCLUDED.updated_at"
            " RETURNING id, last_seq",
            [user_id, character_id, session, *[connection.ops.adapt_datetimefield_value(now)] * 2],
        )
        session_pk, last_seq = cursor.fetchone()
    return session_pk, last_seq
