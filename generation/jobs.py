"""A generation's job, as a worker runs it: take it, call the image backend, record one outcome.

Exactly one outcome per generation, whatever crashes or runs twice: every step is a conditional
update of the row. Taking it (pending, or running but this job's own or left past its lease) makes
it running; completing needs it unfinished, so a result that arrives after the stale rule gave up
on it (and refunded it) changes nothing; failing (generation_fail) refunds only if it was the one
to move it from unfinished to failed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from core import metrics
from core.jobs.providers import ProviderError

from .cache import invalidate_generation_status
from .models import Generation
from .queue import generation_enqueue
from .services import UNFINISHED, generation_fail, generations_fail_stale

logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """The backend failed in a way worth another try (the task retries after a delay)."""


def _backend():
    return import_string(settings.GENERATION_BACKEND)()


def generation_take(*, generation_id: int, job_id: str) -> Generation | None:
    """Mark the generation running for this job, if it is free for it; None if not (finished,
    failed, or another job holds a lease that is not over). Free: pending, or running for this
    same job (a retry), or running past its lease (the worker that took it died)."""
    now = timezone.now()
    lease_over = now - timedelta(seconds=settings.GENERATION_JOB_LEASE)
    # One statement takes the row and returns what the job needs (the ORM's update() returns a
    # count only): every job runs it, and a second round trip would buy nothing.
    table, quote = Generation._meta.db_table, connection.ops.quote_name
    taken = list(Generation.objects.raw(
        f"UPDATE {quote(table)} SET status = %s, job_id = %s, started_at = %s"
        " WHERE id = %s AND (status = %s OR (status = %s AND (job_id = %s OR started_at < %s)))"
        " RETURNING id, user_id, prompt, parameters, cost, created_at, status",
        [Generation.Status.RUNNING, job_id, now, generation_id, Generation.Status.PENDING,
         Generation.Status.RUNNING, job_id, lease_over]))
    if not taken:
        return None
    gen = taken[0]
    invalidate_generation_status(user_id=gen.user_id, generation_id=gen.pk)
    return gen


def generation_complete(*, generation: Generation, result: dict) -> bool:
    """Record the image, if the generation is still unfinished (not given up on meanwhile)."""
    completed = Generation.objects.filter(pk=generation.pk, status__in=UNFINISHED).update(
        status=Generation.Status.COMPLETED, result=result)
    if completed:
        invalidate_generation_status(user_id=generation.user_id, generation_id=generation.pk)
    return bool(completed)


def generation_render(*, generation_id: int, job_id: str, last_try: bool) -> str:
    """Run the job; returns its outcome (completed, failed, skipped, late). Raises RetryLater when
    the backend failed and another try is left."""
    gen = generation_take(generation_id=generation_id, job_id=job_id)
    if gen is None:
        return _finished("skipped", None)
    try:
        result = _backend().generate(prompt=gen.prompt, parameters=gen.parameters)
    except Exception as exc:
        retryable = not isinstance(exc, ProviderError) or exc.retryable
        if retryable and not last_try:
            logger.info("image backend failed for generation %s, will retry: %s", gen.pk, exc)
            metrics.jobs_finished.labels(job="generation", outcome="retried").inc()
            raise RetryLater(str(exc)) from exc
        logger.warning("image backend failed for generation %s", gen.pk, exc_info=True)
        reason = str(exc) if isinstance(exc, ProviderError) else "The image backend failed."
        generation_fail(generation=gen, reason=reason)
        return _finished("failed", gen)
    if not generation_complete(generation=gen, result=result):
        logger.info("generation %s was given up on before its result came: not completed", gen.pk)
        return _finished("late", gen)
    return _finished("completed", gen)


def _finished(outcome: str, gen: Generation | None) -> str:
    metrics.jobs_finished.labels(job="generation", outcome=outcome).inc()
    if gen is not None and outcome in ("completed", "failed"):
        metrics.job_latency.labels(job="generation").observe((timezone.now() - gen.created_at).total_seconds())
    return outcome


def generations_requeue() -> int:
    """Send again the jobs of generations no worker has: pending and not sent for
    GENERATION_REQUEUE_AFTER seconds (the message was lost), or running past their lease (the
    worker died). Each at most once per GENERATION_REQUEUE_AFTER, so a long queue is not flooded."""
    now = timezone.now()
    quiet_since = now - timedelta(seconds=settings.GENERATION_REQUEUE_AFTER)
    lease_over = now - timedelta(seconds=settings.GENERATION_JOB_LEASE)
    due = (Q(status__in=UNFINISHED, created_at__lt=quiet_since)
           & (Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=quiet_since))
           & (Q(status=Generation.Status.PENDING) | Q(started_at__lt=lease_over)))
    ids = list(Generation.objects.filter(due).order_by("id").values_list("id", flat=True)[:1000])
    sent = 0
    for generation_id in ids:
        if Generation.objects.filter(due, pk=generation_id).update(enqueued_at=now):
            generation_enqueue(generation_id=generation_id)
            sent += 1
    return sent


def generations_sweep() -> dict[str, int]:
    """The periodic sweep: give up on (fail and refund) generations older than
    GENERATION_STALE_MINUTES, then send again the jobs of the rest that no worker has."""
    failed = generations_fail_stale(older_than=timedelta(minutes=settings.GENERATION_STALE_MINUTES))
    return {"failed": failed, "requeued": generations_requeue()}
