"""The Celery app: generations and chat replies run here, and periodic work (beat).

Workers: ``celery -A config worker``; the scheduler: ``celery -A config beat`` (one per deployment).
Settings are read from Django's (the CELERY_ ones, config/settings/base.py)."""

import os

from celery import Celery

# As config/wsgi.py: make run and compose set it explicitly.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("chatart")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["generation", "chat", "payments", "core.jobs"])

# Metrics in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, as gunicorn's): the directory must exist
# before the first metric is written; gunicorn's config makes it for the web, this for a worker alone.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
