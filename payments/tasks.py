"""Periodic work of payments, scheduled by Celery beat (CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from celery import shared_task

from .services import renewals_run


@shared_task(name="payments.tasks.renewals")
def renewals() -> dict:
    """What `manage.py subscriptions_renew` does: waiting provider events, renewals, expiries."""
    return renewals_run()
