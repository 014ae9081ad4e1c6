"""Invalidations that could not reach Redis, kept in PostgreSQL until they are applied.

Every worker on every host must stop trusting Redis while such rows exist (core.cache.watch tells
them: a NOTIFY on ``cache_pending`` from the recording transaction, and a periodic look at the
table). A row is removed only after Redis confirmed its delete, and only the row version that was
applied: recording a key again replaces its row with a new one (a new id), so a drain that read the
old row and deletes it by id can never swallow the newer record.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from .client import unlink_keys

CHANNEL = "cache_pending"


def record_pending_invalidations(keys: Iterable[str]) -> None:
    from django.db import connection, transaction

    from core.models import PendingInvalidation

    keys = sorted(set(keys))  # one order for every recorder: concurrent records cannot deadlock
    if not keys:
        return
    with transaction.atomic():
        PendingInvalidation.objects.filter(key__in=keys).delete()
        # A concurrent recorder of the same key may commit first: its row stands for ours too
        # (it was written after our failed delete, so a drain that applies it applies ours).
        PendingInvalidation.objects.bulk_create([PendingInvalidation(key=key) for key in keys], ignore_conflicts=True)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])  # delivered at commit


PENDING_COUNTED_UP_TO = 10_000  # a look stays cheap however long an outage lasts


def pending_count() -> int:
    """Keys waiting for their delete (one row each, counted up to PENDING_COUNTED_UP_TO): the
    watcher's periodic look."""
    from core.models import PendingInvalidation

    return PendingInvalidation.objects.all()[:PENDING_COUNTED_UP_TO].count()


def drain_pending_invalidations(client: redis.Redis, batch: int = 500, unlink=unlink_keys) -> int:
    """Apply recorded deletes; rows go only after Redis confirmed the delete (with ``unlink`` =
    replication.unlink_confirmed: only once it cannot be lost in a failover either)."""
    from core.models import PendingInvalidation

    done, seen = 0, 0
    while True:
        rows = list(PendingInvalidation.objects.filter(id__gt=seen).order_by("id").values_list("id", "key")[:batch])
        if not rows:
            return done
        unlink(client, [key for _, key in rows])
        PendingInvalidation.objects.filter(id__in=[pk for pk, _ in rows]).delete()
        seen = rows[-1][0]
        done += len(rows)
