"""What every app's jobs share: queueing by task name, the retry delay, and the broker's queue depth.

Jobs run on Celery (config/celery.py). Apps queue through here by the task's name, so a service
never imports its own tasks module (which imports the service)."""

from __future__ import annotations

import logging
import random
import threading
import time

from celery import current_app
from django.conf import settings

from core import metrics

logger = logging.getLogger(__name__)

_REGISTRY_LOCK = threading.Lock()
_registry_filled = False


def _fill_registry(app) -> None:
    """Import every app's tasks module once. Celery fills its registry lazily and not thread-safely:
    concurrent first callers saw names missing (NotRegistered)."""
    global _registry_filled
    if _registry_filled:
        return
    with _REGISTRY_LOCK:
        if not _registry_filled:
            app.loader.import_default_modules()
            _registry_filled = True


class _BrokerBreaker:
    """After the broker failed to take a job, this process stops trying for JOB_BROKER_COOLDOWN
    seconds: a frozen broker would otherwise hold every request that queues a job for the
    connection's timeout (and each sync worker with it). Nothing is lost: the job's row is its
    record, and the sweep sends what was not queued."""

    def __init__(self) -> None:
        self.open_until = 0.0

    def blocking(self) -> bool:
        return time.monotonic() < self.open_until

    def failed(self) -> None:
        self.open_until = time.monotonic() + settings.JOB_BROKER_COOLDOWN

    def reset(self) -> None:
        self.open_until = 0.0


BROKER = _BrokerBreaker()


def enqueue(task: str, /, **kwargs: object) -> None:
    """Queue ``task`` (its registered name) with these keyword arguments. Tests' eager mode runs
    it here, in-process. A broker that fails raises (the caller's on_commit logs it) and is left
    alone for a moment; meanwhile jobs are not sent (the sweep sends them)."""
    app = current_app
    if app.conf.task_always_eager:
        _fill_registry(app)
        # throw=False: with it, a retry would propagate instead of running the next try; get()
        # raises what the last try raised.
        app.tasks[task].apply(kwargs=kwargs, throw=False).get()
        return
    if BROKER.blocking():
        metrics.jobs_enqueued.labels(outcome="skipped").inc()
        return
    try:
        app.send_task(task, kwargs=kwargs)
    except Exception:
        BROKER.failed()
        metrics.jobs_enqueued.labels(outcome="failed").inc()
        raise
    metrics.jobs_enqueued.labels(outcome="sent").inc()


def retry_delay(retries: int) -> float:
    """Seconds before try ``retries + 1``: JOB_RETRY_DELAY doubled each time, capped, jittered
    between half and all of it (a provider that is down is not hit by every waiting job at once)."""
    delay = min(settings.JOB_RETRY_MAX_DELAY, settings.JOB_RETRY_DELAY * 2**retries)
    return delay * random.uniform(0.5, 1.0)


def metrics_serve(*, addr: str, port: int) -> None:
    """Serve this worker's metrics over HTTP (``/metrics``, a thread of this process): its jobs'
    outcomes and latencies (its pool's children too, through PROMETHEUS_MULTIPROC_DIR) and the
    queues' depth, read from the broker at each scrape."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr, registry=metrics.registry(metrics.QueueDepthCollector(queue_depths)))
    logger.info("job metrics on http://%s:%s/metrics", addr, port)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each job queue (LLEN in the Redis broker; kombu's client adds the key prefix)."""
    with current_app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=1)
        client = connection.default_channel.client
        return {queue: int(client.llen(queue)) for queue in settings.JOB_QUEUES}
