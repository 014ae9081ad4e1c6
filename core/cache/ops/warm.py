"""``cache_warm``: fill keys ahead of traffic the way reads fill them (leases, compare-and-set)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import redis
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone
from redis.cluster import RedisCluster

from ..client import full_key, pipelined, redis_client
from ..family import KeyFamily, Parts, WarmScope
from ..payload import STAMPED_HEAD, stamp_of
from ..read import fetch, fill_many
from ..registry import activity_sources
from ..topology import TOPOLOGY
from .common import Progress, batches, mget, no_progress, ping, primaries


@dataclass
class WarmResult:
    written: dict[str, int] = field(default_factory=dict)
    already: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # the reader found no such row
    seconds: float = 0.0

    @property
    def total_written(self) -> int:
        return sum(self.written.values())


BATCH = 500
DEFAULT_RATE = 2000  # keys per second: a few percent of what Redis and PostgreSQL serve beside traffic


def active_user_ids(since_days: int | None = None, *, since: datetime | None = None) -> list[int]:
    """Active users who did anything since then (``since_days`` days ago, or ``since``), by every
    activity source the apps registered (a login, a coin movement, a chat message, a generation...)."""
    if since is None:
        since = timezone.now() - timedelta(days=since_days or 0)
    ids: set[int] = set()
    for source in activity_sources().values():
        ids.update(source(since))
    return sorted(get_user_model().objects.filter(id__in=ids, is_active=True).values_list("id", flat=True))


def warm_targets(families: Iterable[KeyFamily], *, users_active_since: int | None = None,
                 per_user: bool = True) -> list[tuple[KeyFamily, Parts]]:
    """The (family, parts) pairs a warm-up fills: the shared families in full, and for each
    per-user family the users active within that family's TTL (their keys are the ones a flush
    or a restart took away and their next requests will read; a key of a user who was last seen
    before that would have expired unread). ``users_active_since`` (days) widens the window to
    every user active since then, the same for all families; ``per_user=False`` leaves them out."""
    targets: list[tuple[KeyFamily, Parts]] = []
    scopes: dict[datetime, WarmScope] = {}  # families with the same window share its queries
    now = timezone.now()
    for family in families:
        if family.shared:
            targets.extend((family, parts) for parts in family.warm_parts(WarmScope()))
            continue
        if not per_user:
            continue
        since = now - (timedelta(days=users_active_since) if users_active_since is not None
                       else timedelta(seconds=family.ttl))
        if since not in scopes:
            scopes[since] = WarmScope(user_ids=tuple(active_user_ids(since=since)), since=since)
        targets.extend((family, parts) for parts in family.warm_parts(scopes[since]))
    return targets


def warm(targets: list[tuple[KeyFamily, Parts]], *, rate: float = 0, progress: Progress = no_progress,
         client: redis.Redis | None = None) -> WarmResult:
    """Fill these keys the way a read does. A family with a bulk loader goes a batch at a time
    (``read.fill_many``: leases, one bulk load, the same compare-and-set as a read); any other
    key, and one fill_many leaves, goes through ``read.fetch`` (leases, TTL caps, metrics). A
    key already cached is left alone, so a second run writes nothing. ``rate`` (keys per second,
    0: as fast as it goes) paces the batches so a warm-up beside live traffic stays a small load.
    In cluster mode each batch holds the keys of one primary, sorted by slot, and goes to that
    node's own connection: a few round trips per batch there too."""
    client = client or redis_client()
    ping(client)
    started = time.perf_counter()
    result = WarmResult()
    size = BATCH if not rate else max(1, min(BATCH, int(rate)))  # a batch is at most a second's budget
    done = 0
    for node_client, node_targets in _by_node(client, targets):
        for batch in batches(node_targets, size):
            _warm_batch(result, batch, progress=progress, client=node_client)
            done += len(batch)
            if rate:
                ahead = done / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
    result.seconds = time.perf_counter() - started
    return result


def _by_node(client: redis.Redis, targets: list[tuple[KeyFamily, Parts]]) -> list[tuple[redis.Redis, list]]:
    """The targets per Redis that holds them: all on ``client`` for one Redis; per primary (its own
    client, keys sorted by slot) in cluster mode."""
    nodes = primaries(client)
    if not nodes:
        return [(client, targets)]
    cluster = cast(RedisCluster, client)
    grouped: dict[str, list[tuple[int, tuple[KeyFamily, Parts]]]] = {}
    for family, parts in targets:
        key = full_key(family.key(**parts))
        grouped.setdefault(cluster.get_node_from_key(key).name, []).append((cluster.keyslot(key), (family, parts)))
    return [(nodes[name], [target for _, target in sorted(keyed, key=lambda pair: pair[0])])
            for name, keyed in grouped.items()]


def _warm_batch(result: WarmResult, batch: list[tuple[KeyFamily, Parts]], *, progress: Progress,
                client: redis.Redis) -> None:
    keys = [full_key(family.key(**parts)) for family, parts in batch]
    before = _cached(client, batch, keys)
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
        return
    # fetch does not say whether it stored: the keys that exist now were written.
    for at, exists in zip(fetched, pipelined(client, [("EXISTS", keys[at]) for at in fetched]), strict=True):
        if exists:
            _count(result.written, batch[at][0])


def _cached(client: redis.Redis, batch: list[tuple[KeyFamily, Parts]], keys: list[str]) -> list[bool]:
    """Whether each key holds a value a read would serve: it exists, and with a version key, it was
    built under the version its scope holds now (a value left by a plan edit or a rename is filled
    again). One round trip for the keys (a versioned value's head only), one for the versions."""
    replies = pipelined(client, [("GETRANGE", key, 0, STAMPED_HEAD - 1) if family.version is not None else ("EXISTS", key)
                                 for key, (family, _) in zip(keys, batch, strict=True)])
    names = {at: full_key(family.version.key(**parts)) for at, (family, parts) in enumerate(batch)
             if family.version is not None and replies[at]}
    if not names:
        return [bool(reply) for reply in replies]
    unique = list(dict.fromkeys(names.values()))
    versions = dict(zip(unique, mget(redis_client() if TOPOLOGY.cluster else client, unique), strict=True))

    def served(at: int, reply) -> bool:
        if at not in names:
            return bool(reply)
        version = versions[names[at]]
        return version is not None and stamp_of(reply) == version

    return [served(at, reply) for at, reply in enumerate(replies)]


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
