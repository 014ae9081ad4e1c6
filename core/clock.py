"""Time boundaries shared by the apps (UTC)."""

from datetime import datetime

from django.utils import timezone


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of the day ``now`` falls in: daily limits and usage reset there."""
    now = now or timezone.now()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)
