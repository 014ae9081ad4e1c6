"""What every app's jobs share: queueing by task name, the retry delay, and the broker's queue depth.

Jobs run on Celery (config/celery.py). Apps queue through here by the task's name, so a service
never imports its own tasks module (which imports the service)."""

from __future__ import annotations

import random
import threading

from celery import current_app
from django.conf import settings

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


def enqueue(task: str, /, **kwargs: object) -> None:
    """Queue ``task`` (its registered name) with these keyword arguments. Tests' eager mode runs
    it here, in-process."""
    app = current_app
    if app.conf.task_always_eager:
        _fill_registry(app)
        # throw=False: with it, a retry would propagate instead of running the next try; get()
        # raises what the last try raised.
        app.tasks[task].apply(kwargs=kwargs, throw=False).get()
        return
    app.send_task(task, kwargs=kwargs)


def retry_delay(retries: int) -> float:
    """Seconds before try ``retries + 1``: JOB_RETRY_DELAY doubled each time, capped, jittered
    between half and all of it (a provider that is down is not hit by every waiting job at once)."""
    delay = min(settings.JOB_RETRY_MAX_DELAY, settings.JOB_RETRY_DELAY * 2**retries)
    return delay * random.uniform(0.5, 1.0)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each job queue (LLEN in the Redis broker; kombu's client adds the key prefix)."""
    with current_app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=1)
        client = connection.default_channel.client
        return {queue: int(client.llen(queue)) for queue in settings.JOB_QUEUES}
