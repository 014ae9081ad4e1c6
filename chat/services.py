"""Chat writes: the user's message and the character's reply, in order, within the plan's limits."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import exceptions

from characters.models import Character
from characters.selectors import character_get_active
from core.cache.store import amending
from core.clock import day_start
from subscriptions.cache import stats_after_use, stats_target
from subscriptions.services import usage_consume

from .cache import history_target, history_with, invalidate_chat_history, message_payload
from .models import ChatMessage, ChatSession
from .queue import chat_reply_enqueue

logger = logging.getLogger(__name__)

_CONTEXT_MESSAGES = 20
NO_REPLY = "(no answer right now; please try again)"  # the reply when the responder keeps failing


def chat_message_send(*, user_id: int, character: str, session: str, content: str) -> dict:
    """Store the message and queue its reply; returns the message and the reply's seq. Creates
    the session on first use.

    The user's message commits first with two sequence numbers reserved (its own and the
    reply's), so concurrent posts keep a strict order; a worker runs the responder after, outside
    any transaction, and its reply takes the reserved number (chat/jobs.py). One statement when
    the character's key is cached: the message, with the plan and the daily use.
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
            sent = _send(mine, character=character, premium=premium, session=session)
            if sent is None:  # deactivated since it was cached: nothing is written
                raise exceptions.NotFound("No such character.")
            # No save signal was sent: the history key is invalidated here, with the names at hand.
            invalidate_chat_history(user_id=user_id, character=character, session=session)
        history_key.change(history_with([message_payload(mine)]))
        stats_key.change(stats_after_use(kind="messages", day=day_start(mine.created_at).date()))
    session_pk, reply_seq, _persona, _context = sent
    # The reply is a job (chat/jobs.py): the message is acknowledged now, the reply appended to the
    # session (and its cached page) when the responder has answered; clients poll the history.
    transaction.on_commit(lambda: chat_reply_enqueue(
        user_id=user_id, character=character, session=session, session_pk=session_pk, reply_seq=reply_seq),
        robust=True)
    return {"session": session, "message": message_payload(mine), "reply": None, "reply_seq": reply_seq}


_PERSONA = ("name", "display_name", "greeting", "persona_prompt")


def _send(mine: ChatMessage, *, character: str, premium: bool, session: str):
    """One statement (usage_consume): check the plan, count the daily use, read the character's
    row (by name, still active: the persona prompt is never cached), create the session or move
    its counter on by two (the message's seq and the reply's), insert the message, and read the
    messages before it for the responder's context. The session row's lock lasts until the
    message commits, so concurrent posts keep a strict order. Returns (session id, the reply's
    seq, the persona, the context oldest first), or None if the character is not active (nothing
    written once the caller's transaction rolls back); ``mine`` gets its id, session and seq."""
    quote = connection.ops.quote_name
    characters = quote(Character._meta.db_table)
    sessions, messages = quote(ChatSession._meta.db_table), quote(ChatMessage._meta.db_table)
    created = connection.ops.adapt_datetimefield_value(mine.created_at)
    row = usage_consume(
        user_id=mine.user_id, kind="messages", premium=premium,
        ctes=(
            f"persona AS (SELECT id, {', '.join(_PERSONA)} FROM {characters} WHERE name = %s AND is_active),"
            f" sess AS (INSERT INTO {sessions} (user_id, character_id, session_id, last_seq, created_at, updated_at)"
            " SELECT %s, persona.id, %s, 2, %s, %s FROM counted, persona"
            f" ON CONFLICT (user_id, character_id, session_id) DO UPDATE"
            f" SET last_seq = {sessions}.last_seq + 2, updated_at = EXCLUDED.updated_at RETURNING id, last_seq),"
            f" mine AS (INSERT INTO {messages} (session_id, user_id, seq, role, content, created_at)"
            " SELECT id, %s, last_seq - 1, %s, %s, %s FROM sess RETURNING id, session_id, seq),"
            f" context AS (SELECT m.seq, m.role, m.content, m.created_at FROM {messages} m, sess"
            " WHERE m.session_id = sess.id AND m.seq < sess.last_seq - 1 ORDER BY m.seq DESC LIMIT %s)"
        ),
        sql=("SELECT mine.id, mine.session_id, mine.seq,"
             " ARRAY(SELECT seq FROM context ORDER BY seq), ARRAY(SELECT role FROM context ORDER BY seq),"
             " ARRAY(SELECT content FROM context ORDER BY seq), ARRAY(SELECT created_at FROM context ORDER BY seq),"
             f" {', '.join(f'persona.{field}' for field in _PERSONA)}"
             " FROM mine, persona"),
        params=[character, mine.user_id, session, created, created,
                mine.user_id, str(mine.role), mine.content, created, _CONTEXT_MESSAGES],
    )
    if row is None:
        return None
    mine.pk, mine.session_id, mine.seq, seqs, roles, contents, times, *persona = row
    mine._state.adding, mine._state.db = False, connection.alias
    context = [ChatMessage(session_id=mine.session_id, seq=seq, role=role, content=text, created_at=at)
               for seq, role, text, at in zip(seqs, roles, contents, times, strict=True)]
    return mine.session_id, mine.seq + 1, dict(zip(_PERSONA, persona, strict=True)), context
