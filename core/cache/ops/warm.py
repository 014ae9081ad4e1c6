"""``cache_warm``: fill keys ahead of traffic through the normal read-through path."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from ..client import full_key, redis_client
from ..family import KeyFamily, Parts, WarmScope
from ..registry import activity_sources
from ..store import fetch
from .common import Progress, batches, no_progress, ping


@dataclass
class WarmResult:
    written: dict[str, int] = field(default_factory=dict)
    already: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # the reader found no such row
    seconds: float = 0.0

    @property
    def total_written(self) -> int:
        return sum(self.written.values())


def active_user_ids(since_days: int) -> list[int]:
    """Active users who did anything in the last ``since_days`` days, by every activity source
    the apps registered (a login, a coin movement, a chat message, a generation...)."""
    since = timezone.now() - timedelta(days=since_days)
    ids: set[int] = set()
    for source in activity_sources().values():
        ids.update(source(since))
    return sorted(get_user_model().objects.filter(id__in=ids, is_active=True).values_list("id", flat=True))


def warm_targets(families: Iterable[KeyFamily], *, users_active_since: int | None = None) -> list[tuple[KeyFamily, Parts]]:
    """The (family, parts) pairs a warm-up fills: the shared families in full, and the per-user
    families of recently active users (each family enumerates its own keys)."""
    families = list(families)
    scope = WarmScope()
    if users_active_since is not None and any(not family.shared for family in families):
        scope = WarmScope(user_ids=tuple(active_user_ids(users_active_since)),
                          since=timezone.now() - timedelta(days=users_active_since))
    targets: list[tuple[KeyFamily, Parts]] = []
    for family in families:
        if not family.shared and users_active_since is None:
            continue
        targets.extend((family, parts) for parts in family.warm_parts(scope))
    return targets


def warm(targets: list[tuple[KeyFamily, Parts]], *, progress: Progress = no_progress,
         client: redis.Redis | None = None) -> WarmResult:
    """Fill these keys through the read-through path (``store.fetch``: leases, TTL caps, metrics).
    A key already cached is left alone, so a second run writes nothing."""
    client = client or redis_client()
    ping(client)
    started = time.perf_counter()
    result = WarmResult()
    for batch in batches(targets, 500):
        keys = [full_key(family.key(**parts)) for family, parts in batch]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        before = pipe.execute()
        for (family, parts), existed in zip(batch, before, strict=True):
            # One step per key, so a bar moves with the work rather than in jumps of a batch.
            if existed:
                result.already[family.name] = result.already.get(family.name, 0) + 1
                progress(1)
                continue
            try:
                fetch(family, **parts)
            except ObjectDoesNotExist:
                result.skipped[family.name] = result.skipped.get(family.name, 0) + 1
                progress(1)
                continue
            result.written.setdefault(family.name, 0)
            progress(1)
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        after = pipe.execute()
        for (family, _), existed, exists in zip(batch, before, after, strict=True):
            if exists and not existed:
                result.written[family.name] = result.written.get(family.name, 0) + 1
    result.seconds = time.perf_counter() - started
    return result
