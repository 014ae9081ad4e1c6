"""Invalidations that could not reach Redis, kept in PostgreSQL until they are applied."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from .client import unlink_keys


def record_pending_invalidations(keys: Iterable[str]) -> None:
    from core.models import PendingInvalidation

    PendingInvalidation.objects.bulk_create(
        [PendingInvalidation(key=key) for key in keys], ignore_conflicts=True
    )


def drain_pending_invalidations(client: redis.Redis, batch: int = 500) -> int:
    """Apply recorded deletes; rows go only after Redis confirmed the delete."""
    from core.models import PendingInvalidation

    done = 0
    while True:
        rows = list(PendingInvalidation.objects.order_by("id").values_list("id", "key")[:batch])
        if not rows:
            return done
        unlink_keys(client, [key for _, key in rows])
        PendingInvalidation.objects.filter(id__in=[pk for pk, _ in rows]).delete()
        done += len(rows)
