"""The Celery app: generations and chat replies run here, and periodic work (beat).

Workers: ``celery -A config worker``; the scheduler: ``celery -A config beat`` (one per deployment).
Settings are read from Django's (the CELERY_ ones, config/settings/base.py)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init

# As config/wsgi.py: make run and compose set it explicitly.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("chatart")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["generation", "chat", "payments", "core.jobs"])



@task_prerun.connect
@task_postrun.connect
def recycle_database_connections(task=None, **kwargs) -> None:
    """What Django does around each request, around each job: close the thread's connection if it
    is past CONN_MAX_AGE or broken, and re-arm CONN_HEALTH_CHECKS. (Celery's own fixup would close
    it every time; CELERY_DB_REUSE_MAX in settings stops that.) Not for an eager job, which runs
    inside its caller's transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_init.connect
def serve_job_metrics(**kwargs) -> None:
    """JOB_METRICS_PORT: the worker's metrics, scraped where it runs (another host, its own
    container), since gunicorn's /metrics there cannot see them."""
    from django.conf import settings

    if settings.JOB_METRICS_PORT:
        from core.jobs import metrics_serve

        metrics_serve(addr=settings.JOB_METRICS_ADDR, port=settings.JOB_METRICS_PORT)


# Metrics in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, as gunicorn's): the directory must exist
# before the first metric is written; gunicorn's config makes it for the web, this for a worker alone.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
