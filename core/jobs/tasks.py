"""Periodic work of the cache layer, scheduled by Celery beat (CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

import io

from celery import shared_task
from django.conf import settings
from django.core.management import call_command


@shared_task(name="core.jobs.tasks.cache_warm_active")
def cache_warm_active() -> str:
    """The warm-up follows activity: the shared families and the per-user keys of users active in
    the last CACHE_WARM_ACTIVE_DAYS days, through cache_warm (keys already cached are left alone)."""
    out = io.StringIO()
    call_command("cache_warm", users_active_since=settings.CACHE_WARM_ACTIVE_DAYS, stdout=out)
    return out.getvalue().strip().splitlines()[-1] if out.getvalue().strip() else ""
