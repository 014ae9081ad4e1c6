"""Invalidation after commit.

``invalidate`` deletes keys (and their leases) once the current transaction commits; a version key
(``family.Version``) is deleted the same way, and with it every value built under it. A delete that
cannot reach Redis is recorded in ``core.PendingInvalidation``: its keys are read from the database,
on every worker of every host, until it is applied (pending.py, health.py, watch.py). In a cluster
each node's keys go on their own, so a node that is down defers only its keys.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.db import transaction

from .client import CACHE_ERRORS, full_key
from .family import KeyFamily, Parts, Version
from .health import HEALTH, CacheHealth
from .near import NEAR
from .pending import record_pending_invalidations
from .topology import TOPOLOGY

Keys = tuple[tuple[KeyFamily | Version, str], ...]


class _TakenOver(threading.local):
    """Keys whose invalidation an open amendment (amendment.py) takes over, per thread."""

    keys: dict[str, Any] = {}  # noqa: RUF012  (per thread: threading.local)


TAKEN_OVER = _TakenOver()


def invalidate(*targets: tuple[KeyFamily | Version, Parts]) -> None:
    """Delete these keys once the current transaction commits (at once outside a transaction).

    ``targets`` are ``(family, parts)`` pairs, or ``(version, parts)``: one key however many
    values were built under that version (a fan-out). A rollback discards the delete; a failing Redis
    never fails the committed write: the keys are recorded and deleted later.
    """
    if not settings.CACHE_LAYER_ENABLED:
        return
    keys = tuple((family, family.key(**parts)) for family, parts in targets)
    amended = TAKEN_OVER.keys
    if amended:  # the open amendment's commit stores the new value, or deletes
        keys = tuple((family, key) for family, key in keys if key not in amended)
    if not keys:
        return

    def delete_cached_keys() -> None:
        delete_now(keys)

    transaction.on_commit(delete_cached_keys, robust=True)


def delete_now(keys: Keys) -> None:
    if not TOPOLOGY.cluster:
        _delete_on(HEALTH, keys)
        # This process reads its own writes at once; the others when tracking tells them (near.py).
        NEAR.evict([key for _, key in keys])
        return
    # Cluster: each node's keys on their own, so a node that is down defers only its keys.
    by_node: dict[CacheHealth, list[tuple[KeyFamily | Version, str]]] = {}
    for family, key in keys:
        by_node.setdefault(TOPOLOGY.health_for(full_key(key)), []).append((family, key))
    for health, group in by_node.items():
        _delete_on(health, tuple(group))


def _delete_on(health: CacheHealth, keys: Keys) -> None:
    names = [key for _, key in keys]
    if health.blocking():
        defer(health, keys)
        return
    try:
        health.unlink(names)
    except CACHE_ERRORS as exc:
        health.failure(exc, "delete")
        defer(health, keys)
        return
    for family, _ in keys:
        family.counters.deleted.inc()


def defer(health: CacheHealth, keys: Keys) -> None:
    """These deletes did not reach Redis (or were not confirmed): record them; their keys, and only
    they, bypass the cache on every worker until the deletes are applied."""
    record_pending_invalidations(key for _, key in keys)
    health.pending_recorded()
    for family, _ in keys:
        family.counters.deferred.inc()
