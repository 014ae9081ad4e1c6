"""Chat writes: the user's message and the character's reply, in order, within the plan's limits."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import exceptions

from characters.models import Character
from characters.selectors import character_get_active, character_id_if_active
from core.cache.api import amend_after_commit
from core.clock import day_start
from subscriptions.cache import stats_after_use, stats_target
from subscriptions.services import usage_count

from .cache import history_append, history_target, invalidate_chat_history, message_payload
from .models import ChatMessage, ChatSession
from .queue import chat_reply_enqueue

logger = logging.getLogger(__name__)

NO_REPLY = "(no answer right now; please try again)"  # the reply when the responder keeps failing


def chat_message_send(*, user_id: int, character: str, session: str, content: str) -> dict:
    """Store the message and queue its reply; returns the message and the reply's seq. Creates
    the session on first use.

    The user's message commits first with two sequence numbers reserved (its own and the
    reply's), so concurrent posts keep a strict order; a worker runs the responder after, outside
    any transaction, and its reply takes the reserved number (chat/jobs.py).
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
    # the next read of either still hits (amend_after_commit).
    with amend_after_commit(chat, stats_target(user_id=user_id)) as (history_key, stats_key):
        with transaction.atomic():
            usage_count(user_id=user_id, kind="messages", premium=premium)
            character_id = character_id_if_active(name=character)  # from the row, not the cached key
            if character_id is None:  # deactivated since it was cached: nothing is written
                raise exceptions.NotFound("No such character.")
            reply_seq = _message_store(mine, character_id=character_id, session=session)
            # No save signal was sent: the history key is invalidated here, with the names at hand.
            invalidate_chat_history(user_id=user_id, character=character, session=session)
        history_append(history_key, mine)
        stats_key.change(stats_after_use(kind="messages", day=day_start(mine.created_at).date()))
    # The reply is a job (chat/jobs.py): the message is acknowledged now, the reply appended to the
    # session (and its cached page) when the responder has answered; clients poll the history.
    transaction.on_commit(lambda: chat_reply_enqueue(
        user_id=user_id, character=character, session=session, session_pk=mine.session_id, reply_seq=reply_seq),
        robust=True)
    return {"session": session, "message": message_payload(mine), "reply": None, "reply_seq": reply_seq}


# The message's three statements are written out (PostgreSQL, SQLite 3.35+): the ORM has no upsert
# that moves a counter and returns it, and its query building costs several times a statement's
# round trip on this path.

def _message_store(mine: ChatMessage, *, character_id: int, session: str) -> int:
    """Create the session or move its counter on by two (the message's seq and the reply's), then
    insert the message; returns the reply's seq. The upsert holds the session row's lock until
    the message commits, so concurrent posts keep a strict order. ``mine`` gets its id, session
    and seq."""
    quote = connection.ops.quote_name
    sessions, messages = quote(ChatSession._meta.db_table), quote(ChatMessage._meta.db_table)
    created = connection.ops.adapt_datetimefield_value(mine.created_at)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {sessions} (user_id, character_id, session_id, last_seq, created_at, updated_at)"
            " VALUES (%s, %s, %s, 2, %s, %s) ON CONFLICT (user_id, character_id, session_id)"
            f" DO UPDATE SET last_seq = {sessions}.last_seq + 2, updated_at = excluded.updated_at"
            " RETURNING id, last_seq",
            [mine.user_id, character_id, session, created, created],
        )
        mine.session_id, last_seq = cursor.fetchone()
        mine.seq = last_seq - 1
        # No post_save (as bulk_create): the caller amends the history key itself.
        cursor.execute(
            f"INSERT INTO {messages} (session_id, user_id, seq, role, content, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [mine.session_id, mine.user_id, mine.seq, str(mine.role), mine.content, created],
        )
        (mine.pk,) = cursor.fetchone()
    mine._state.adding, mine._state.db = False, connection.alias
    return last_seq
