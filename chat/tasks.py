"""Celery tasks of chat (thin: the work is in chat/jobs.py)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from core.jobs import retry_delay

from . import jobs


@shared_task(bind=True, name="chat.tasks.reply", acks_late=True, reject_on_worker_lost=True, max_retries=None)
def reply(self, *, user_id: int, character: str, session: str, session_pk: int, reply_seq: int) -> str:
    try:
        return jobs.chat_reply(user_id=user_id, character=character, session=session, session_pk=session_pk,
                               reply_seq=reply_seq, last_try=self.request.retries >= settings.JOB_MAX_RETRIES)
    except jobs.RetryLater as exc:
        raise self.retry(countdown=retry_delay(self.request.retries), exc=exc) from None


@shared_task(name="chat.tasks.sweep")
def sweep() -> dict[str, int]:
    return jobs.chat_replies_sweep()
