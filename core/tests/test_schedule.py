"""The scheduler's periodic work: every scheduled task exists, and each does its job when run."""

import pytest
from celery import current_app
from django.conf import settings

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_scheduled_task_is_registered():
    current_app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled == {"payments.tasks.renewals", "generation.tasks.sweep", "chat.tasks.sweep",
                         "core.jobs.tasks.cache_warm_active"}
    assert scheduled <= set(current_app.tasks)
    # Periodic tasks queue on "default", generations and replies on queues of their own.
    routes = settings.CELERY_TASK_ROUTES
    assert all(name not in routes for name in scheduled)


def test_the_warm_up_fills_the_keys_of_recently_active_users(alice, user, characters, redis_raw):
    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json").status_code == 202
    redis_raw.flushdb()  # our private server
    summary = current_app.tasks["core.jobs.tasks.cache_warm_active"].apply().get()
    assert "key(s) written" in summary and summary == summary.strip()
    assert redis_raw.exists("characters:list", f"user:coins:{user.id}", f"chat:history:{user.id}:luna:s1") == 3


def test_the_renewals_task_runs_the_renewals(plans):
    result = current_app.tasks["payments.tasks.renewals"].apply().get()
    assert set(result) >= {"renewed", "failed", "expired", "events_applied"}
