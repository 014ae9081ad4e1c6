"""Invalidations that could not reach Redis, kept in PostgreSQL until they are applied.

What is uncertain after such a failure is those keys, not the keyspace: every worker on every host
keeps the set of pending keys in memory (``PENDING``) and reads exactly those from the database
(no fill) until their delete is applied and confirmed; every other key stays served from Redis.
core.cache.watch keeps the set current: the recording transaction sends ``NOTIFY cache_pending``
with the keys as payload (an empty payload, when they do not fit, says "reload"), a drain that
removed rows sends an empty one, and a periodic look reloads the set when the table changed. Past
``CACHE_PENDING_KEYS_MAX`` keys the set is not kept: every read bypasses Redis until the table
shrinks again (the whole-keyspace bypass, for safety).

A row is removed only after Redis confirmed its delete, and only the row version that was
applied: recording a key again replaces its row with a new one (a new id), so a drain that read the
old row and deletes it by id can never swallow the newer record.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import redis
from django.conf import settings
from redis.crc import key_slot

from .client import full_key, unlink_keys
from .hooks import HOOKS

CHANNEL = "cache_pending"
RELOAD = ""  # a notification's payload when the keys do not fit in it (or rows were removed)
NOTIFY_PAYLOAD_MAX = 7000  # PostgreSQL's limit is 8000 bytes


def slot_of(key: str) -> int:
    """The Redis Cluster hash slot of a family key (as it is spelled in Redis)."""
    return key_slot(full_key(key).encode("utf-8", "surrogateescape"))


class PendingKeys:
    """This process's view of the pending keys. ``holds`` is the read path's check (a dict lookup,
    no SQL). Every change is stamped with a sequence number, so a reload from the table that began
    before a local record cannot drop that record, and a drain removes only what it applied."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._keys: dict[str, int] = {}  # key -> the sequence number it was added at
        self.overflow = False  # too many to keep: every key counts as pending
        self.seq = 0
        self.loaded = False  # read from the table at least once in this process
        self.table = (0, 0)  # (rows, highest id) when last loaded: the periodic look compares

    def holds(self, key: str) -> bool:
        return self.overflow or (bool(self._keys) and key in self._keys)

    def any(self) -> bool:
        return self.overflow or bool(self._keys)

    def keys(self) -> list[str]:
        return list(self._keys)

    def add(self, keys: Iterable[str]) -> int:
        """These keys are pending; the sequence number of the addition (for ``discard``)."""
        with self._lock:
            self.seq += 1
            for key in keys:
                self._keys[key] = self.seq
            if len(self._keys) > settings.CACHE_PENDING_KEYS_MAX:
                self.overflow = True
            return self.seq

    def mark(self) -> int:
        """A sequence number to hand to ``replace``/``discard`` later: what changes after it stays."""
        with self._lock:
            self.seq += 1
            return self.seq

    def replace(self, keys: list[str], since: int, *, overflow: bool, table: tuple[int, int]) -> None:
        """The table's keys as read after ``mark()`` returned ``since``; keys added since stay."""
        with self._lock:
            fresh = {key: since for key in keys}
            fresh.update((key, seq) for key, seq in self._keys.items() if seq > since)
            self._keys, self.overflow, self.table, self.loaded = fresh, overflow, table, True

    def discard(self, keys: Iterable[str], since: int) -> None:
        """These keys' deletes, pending as of ``since``, were applied (and confirmed); a key
        recorded again after that stays."""
        with self._lock:
            for key in keys:
                if self._keys.get(key, since + 1) <= since:
                    del self._keys[key]


PENDING = PendingKeys()


def record_pending_invalidations(keys: Iterable[str]) -> None:
    from django.db import transaction

    from core.models import PendingInvalidation

    keys = sorted(set(keys))  # one order for every recorder: concurrent records cannot deadlock
    if not keys:
        return
    PENDING.add(keys)  # this process bypasses them at once, before the row commits
    with transaction.atomic():
        PendingInvalidation.objects.filter(key__in=keys).delete()
        # A concurrent recorder of the same key may commit first: its row stands for ours too
        # (it was written after our failed delete, so a drain that applies it applies ours).
        PendingInvalidation.objects.bulk_create([PendingInvalidation(key=key, slot=slot_of(key)) for key in keys],
                                                ignore_conflicts=True)
        payload = "\n".join(keys)
        notify(payload if len(payload.encode()) <= NOTIFY_PAYLOAD_MAX else RELOAD)
    # Again once committed: a reload that read the table before the commit cannot have dropped them.
    PENDING.add(keys)


def notify(payload: str) -> None:
    """Tell every worker of every host (delivered at commit)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])


def table_state() -> tuple[int, int]:
    """(rows, highest id), rows counted up to CACHE_PENDING_KEYS_MAX + 1: the periodic look. Rows
    only come with a new, higher id and go by deletion, so the pair changes whenever the set does."""
    from django.db.models import Max

    from core.models import PendingInvalidation

    top = PendingInvalidation.objects.aggregate(top=Max("id"))["top"] or 0
    rows = PendingInvalidation.objects.all()[: settings.CACHE_PENDING_KEYS_MAX + 1].count() if top else 0
    return rows, top


def reload_pending_keys(table: tuple[int, int] | None = None) -> None:
    """Read the pending keys (up to CACHE_PENDING_KEYS_MAX) into ``PENDING``: two small queries,
    bounded however long an outage lasts."""
    from core.models import PendingInvalidation

    since = PENDING.mark()
    table = table or table_state()
    limit = settings.CACHE_PENDING_KEYS_MAX
    keys = list(PendingInvalidation.objects.values_list("key", flat=True)[: limit + 1]) if table[0] else []
    PENDING.replace(keys[:limit], since, overflow=len(keys) > limit, table=table)


def drain_pending_invalidations(client: redis.Redis, batch: int = 500, unlink=unlink_keys) -> int:
    """Apply recorded deletes; rows go only after Redis confirmed the delete (with ``unlink`` =
    replication.unlink_confirmed: only once it cannot be lost in a failover either)."""
    from core.models import PendingInvalidation

    return drain_rows(PendingInvalidation.objects.all(), lambda keys: unlink(client, keys), batch)


def drain_rows(rows_query, unlink, batch: int = 500, *, node: str = "") -> int:
    """Apply the deletes of these rows, a batch at a time in id order. Each batch's keys are in this
    process's set while they are applied (a refused batch leaves them there), and leave it once
    confirmed; other processes learn of it from the notification sent after the drain."""
    from core.models import PendingInvalidation

    done, seen = 0, 0
    try:
        while True:
            rows = list(rows_query.filter(id__gt=seen).order_by("id").values_list("id", "key")[:batch])
            if not rows:
                return done
            seen = rows[-1][0]
            keys = [key for _, key in rows]
            HOOKS.pending_rows_read(node, keys)
            since = PENDING.add(keys)
            unlink(keys)
            PendingInvalidation.objects.filter(id__in=[pk for pk, _ in rows]).delete()
            PENDING.discard(keys, since)
            done += len(rows)
    finally:
        if done:
            notify(RELOAD)
