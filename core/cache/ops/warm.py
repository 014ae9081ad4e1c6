"""``cache_warm``: fill keys ahead of traffic the way reads fill them (leases, compare-and-set)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from ..client import full_key, pipelined, redis_client
from ..family import KeyFamily, Parts, WarmScope
from ..read import fetch, fill_many
from ..registry import activity_sources
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
    """Fill these keys the way a read does. A family with a bulk loader goes a batch at a time
    (``fill_many``: leases, one bulk load, the same compare-and-set as a read); any other
    key, and one fill_many leaves, goes through ``fetch`` (leases, TTL caps, metrics). A
    key already cached is left alone, so a second run writes nothing."""
    client = client or redis_client()
    ping(client)
    started = time.perf_counter()
    result = WarmResult()
    for batch in batches(targets, 500):
        keys = [full_key(family.key(**parts)) for family, parts in batch]
        before = pipelined(client, [("EXISTS", key) for key in keys])
        missing: dict[str, list[int]] = {}  # per family, the batch positions to fill
        for at, ((family, _), existed) in enumerate(zip(batch, before, strict=True)):
            if existed:
                _count(result.already, family)
                progress(1)
            else:
                missing.setdefault(family.name, []).append(at)
        fetched: list[int] = []
        for positions in missing.values():
            fetched += _fill(result, batch, positions, progress=progress, client=client)
        if not fetched:
            continue
        # fetch does not say whether it stored: the keys that exist now were written.
        for at, exists in zip(fetched, pipelined(client, [("EXISTS", keys[at]) for at in fetched]), strict=True):
            if exists:
                _count(result.written, batch[at][0])
    result.seconds = time.perf_counter() - started
    return result


def _fill(result: WarmResult, batch: list[tuple[KeyFamily, Parts]], positions: list[int], *,
          progress: Progress, client: redis.Redis) -> list[int]:
    """Fill the missing keys of one family at these batch positions; the positions that went
    through fetch come back, for the caller to count."""
    family = batch[positions[0]][0]
    filled = fill_many(family, [batch[at][1] for at in positions], client=client)
    result.written.setdefault(family.name, 0)
    result.written[family.name] += len(filled.stored)
    for _ in filled.missing:
        _count(result.skipped, family)
    if len(filled.rest) < len(positions):
        progress(len(positions) - len(filled.rest))
    for i in filled.rest:
        # One step per key, so a bar moves with the work rather than in jumps of a batch.
        try:
            fetch(family, **batch[positions[i]][1])
        except ObjectDoesNotExist:
            _count(result.skipped, family)
        progress(1)
    return [positions[i] for i in filled.rest]


def _count(counts: dict[str, int], family: KeyFamily) -> None:
    counts[family.name] = counts.get(family.name, 0) + 1
