"""Celery tasks of generations (thin: the work is in generation/jobs.py)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from core.jobs import retry_delay

from . import jobs


# acks_late + reject_on_worker_lost: a worker killed mid-job leaves the message to another
# (the row's lease and conditional updates keep the outcome single).
@shared_task(bind=True, name="generation.tasks.render", acks_late=True, reject_on_worker_lost=True,
             max_retries=None)
def render(self, *, generation_id: int) -> str:
    try:
        return jobs.generation_render(generation_id=generation_id, job_id=self.request.id,
                                      last_try=self.request.retries >= settings.JOB_MAX_RETRIES)
    except jobs.RetryLater as exc:
        raise self.retry(countdown=retry_delay(self.request.retries), exc=exc) from None


@shared_task(name="generation.tasks.sweep")
def sweep() -> dict[str, int]:
    return jobs.generations_sweep()
