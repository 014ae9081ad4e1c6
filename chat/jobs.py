"""A chat reply's job, as a worker runs it: the responder's answer to one message, appended to
the session at the seq its message reserved (and to the cached page), once.

Once: the reply's (session, seq) is unique, so a job run twice (redelivered after a worker died,
or sent again by the sweep) writes nothing the second time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from core import metrics
from core.cache.api import amend_after_commit, fetch_data
from core.jobs.providers import ProviderError

from .cache import CHAT_HISTORY, history_append, history_target, invalidate_chat_history, message_payload
from .models import ChatMessage, ChatSession
from .queue import chat_reply_enqueue
from .services import NO_REPLY

logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """The responder failed in a way worth another try (the task retries after a delay)."""


def _responder():
    return import_string(settings.CHAT_RESPONDER)()


def _replied(session_pk: int, reply_seq: int) -> bool:
    return ChatMessage.objects.filter(session_id=session_pk, seq=reply_seq).exists()


def _conversation(*, user_id: int, character: str, session: str, session_pk: int, reply_seq: int):
    """The persona (never cached: it is private) and the context: the cached page's messages
    before the one to answer, and that message. None if the message is gone (session deleted)."""
    persona = (ChatSession.objects.filter(pk=session_pk)
               .values(name=F("character__name"), display_name=F("character__display_name"),
                       greeting=F("character__greeting"), persona_prompt=F("character__persona_prompt")).first())
    if persona is None:
        return None
    try:
        page = fetch_data(CHAT_HISTORY, user_id=user_id, character=character, session=session)["messages"]
    except ChatSession.DoesNotExist:  # renamed character: the old name's key has no session
        page = []
    message = next((m for m in page if m["seq"] == reply_seq - 1), None)
    if message is None:  # not in the recent page (renamed, or very busy): from the database
        row = ChatMessage.objects.filter(session_id=session_pk, seq=reply_seq - 1).first()
        if row is None:
            return None
        message, page = message_payload(row), [
            message_payload(m) for m in ChatMessage.objects.filter(session_id=session_pk, seq__lt=reply_seq - 1)
            .order_by("-seq")[: settings.OPENAI_CHAT_CONTEXT_MESSAGES]][::-1]
    history = [m for m in page if m["seq"] < reply_seq - 1]
    return persona, history, message


def chat_reply(*, user_id: int, character: str, session: str, session_pk: int, reply_seq: int,
               last_try: bool) -> str:
    """Run the job; returns its outcome (replied, failed: the placeholder answer, skipped).
    Raises RetryLater when the responder failed and another try is left."""
    if _replied(session_pk, reply_seq):
        return _finished("skipped", None)
    conversation = _conversation(user_id=user_id, character=character, session=session, session_pk=session_pk,
                                 reply_seq=reply_seq)
    if conversation is None:
        return _finished("skipped", None)
    persona, history, message = conversation
    outcome = "replied"
    try:
        reply = _responder().reply(character=persona, history=history, message=message["content"])
    except Exception as exc:
        retryable = not isinstance(exc, ProviderError) or exc.retryable
        if retryable and not last_try:
            logger.info("chat responder failed for session %s, will retry: %s", session_pk, exc)
            metrics.jobs_finished.labels(job="chat_reply", outcome="retried").inc()
            raise RetryLater(str(exc)) from exc
        # The user's message is stored: answer it with a placeholder, keep the order.
        logger.warning("chat responder failed for session %s", session_pk, exc_info=True)
        reply, outcome = NO_REPLY, "failed"
    if not chat_reply_write(user_id=user_id, character=character, session=session, session_pk=session_pk,
                            reply_seq=reply_seq, content=reply):
        return _finished("skipped", None)
    return _finished(outcome, datetime.fromisoformat(message["created_at"]))


def chat_reply_write(*, user_id: int, character: str, session: str, session_pk: int, reply_seq: int,
                     content: str) -> bool:
    """Append the reply at its reserved seq, and to the cached page; False if it was there already."""
    theirs = ChatMessage(session_id=session_pk, user_id=user_id, seq=reply_seq, role=ChatMessage.Role.ASSISTANT,
                         content=content, created_at=timezone.now())
    chat = history_target(user_id=user_id, character=character, session=session)
    try:
        with amend_after_commit(chat) as (history_key,), transaction.atomic():
            ChatMessage.objects.bulk_create([theirs])
            invalidate_chat_history(user_id=user_id, character=character, session=session)
            history_append(history_key, theirs)
    except IntegrityError:  # another run of this job wrote it first
        return False
    return True


def _finished(outcome: str, asked_at: datetime | None) -> str:
    metrics.jobs_finished.labels(job="chat_reply", outcome=outcome).inc()
    if asked_at is not None:  # from the user's message to its reply
        metrics.job_latency.labels(job="chat_reply").observe((timezone.now() - asked_at).total_seconds())
    return outcome


def chat_replies_sweep() -> dict[str, int]:
    """User messages still without their reply: sent again after CHAT_REPLY_REQUEUE_AFTER seconds
    (the job's message was lost or its worker died), each at most once per CHAT_REPLY_REQUEUE_AFTER
    (a provider that is down, or a long queue, must not get one more job per sweep); answered with
    the placeholder after CHAT_REPLY_GIVE_UP_AFTER (or the user would wait forever). A job run
    twice writes once."""
    now = timezone.now()
    quiet_since = now - timedelta(seconds=settings.CHAT_REPLY_REQUEUE_AFTER)
    give_up_before = now - timedelta(seconds=settings.CHAT_REPLY_GIVE_UP_AFTER)
    recent = Q(role=ChatMessage.Role.USER, created_at__gte=now - timedelta(days=1))
    resend = Q(created_at__lt=quiet_since) & (Q(reply_sent_at__isnull=True) | Q(reply_sent_at__lt=quiet_since))
    waiting = (ChatMessage.objects.filter(recent & (resend | Q(created_at__lt=give_up_before)))
               .exclude(Exists(ChatMessage.objects.filter(session_id=OuterRef("session_id"), seq=OuterRef("seq") + 1)))
               .values_list("id", "user_id", "session__character__name", "session__session_id", "session_id", "seq",
                            "created_at")
               .order_by("id")[:1000])
    requeued = given_up = 0
    for message_id, user_id, character, session, session_pk, seq, created_at in waiting:
        job = {"user_id": user_id, "character": character, "session": session, "session_pk": session_pk,
               "reply_seq": seq + 1}
        if created_at < give_up_before:
            given_up += chat_reply_write(**job, content=NO_REPLY)
        # The conditional update: of two sweeps at once (a second beat), one sends it.
        elif ChatMessage.objects.filter(recent & resend, pk=message_id).update(reply_sent_at=now):
            chat_reply_enqueue(**job)
            requeued += 1
    return {"requeued": requeued, "given_up": given_up}
