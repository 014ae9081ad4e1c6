"""Operator tools for the cache: warm, flush, stats, verify, and the README key table.

The management commands (core/management/commands/cache_*.py) are thin wrappers around these
functions, and the admin's cache page shows ``stats()``. Every walk over keys is ``SCAN`` with the
family's pattern (behind the namespace prefix), never ``KEYS``; deletes are ``UNLINK`` in batches,
never ``FLUSHDB``/``FLUSHALL``, so a Redis shared with other apps keeps their keys.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import orjson
import redis
from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone
from django.utils.module_loading import import_string

from .registry import FAMILIES, KeyFamily, family_of
from .store import Payload, fetch, full_key, lease_key, namespace, redis_client

BATCH = 1000
SHARED_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.shared)
USER_FAMILIES = tuple(name for name, family in FAMILIES.items() if not family.shared)

Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    pass


class UnknownFamily(ValueError):
    pass


def resolve_families(names: Iterable[str]) -> list[KeyFamily]:
    """Registry families by name, in registry order; UnknownFamily names the valid ones."""
    names = list(names)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise UnknownFamily(f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                            f"choose from: {', '.join(FAMILIES)}")
    return [family for name, family in FAMILIES.items() if name in names]


def _glob_escape(text: str) -> str:
    # The namespace is operator-supplied: a '*' or '[' in it must match literally in SCAN MATCH.
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def scan_pattern(family: KeyFamily) -> str:
    return _glob_escape(namespace()) + family.pattern


def scan_family(client: redis.Redis, family: KeyFamily, count: int = BATCH) -> Iterator[str]:
    """Full keys (with namespace) of one family. SCAN's glob '*' also matches ':', so each hit is
    checked against the family's exact shape before it is reported."""
    prefix = namespace()
    for raw in client.scan_iter(match=scan_pattern(family), count=count):
        key = raw.decode("utf-8", "surrogateescape")
        if key.startswith(prefix) and family.parts_of(key[len(prefix):]) is not None:
            yield key


def _batches(items: Iterable, size: int = BATCH) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ping(client: redis.Redis | None = None) -> None:
    """Raise redis.RedisError when Redis cannot be reached: commands fail loudly, unlike requests."""
    (client or redis_client()).ping()


# --- flush ------------------------------------------------------------------------------------


def flush(families: Iterable[KeyFamily], *, dry_run: bool = False, progress: Progress = _no_progress,
          client: redis.Redis | None = None) -> dict[str, int]:
    """Delete every key of these families (and their leases, so no in-flight reader can store a
    value it loaded before the flush). Returns the number of keys per family."""
    client = client or redis_client()
    counts: dict[str, int] = {}
    for family in families:
        counts[family.name] = 0
        for batch in _batches(scan_family(client, family)):
            if not dry_run:
                prefix = namespace()
                client.unlink(*batch, *(lease_key(k[len(prefix):]) for k in batch))
            counts[family.name] += len(batch)
            progress(len(batch))
    return counts


def flush_key(key: str, *, dry_run: bool = False, client: redis.Redis | None = None) -> tuple[KeyFamily, int]:
    """Delete one key of a family. ``key`` is as the registry names it (namespace optional)."""
    client = client or redis_client()
    prefix = namespace()
    bare = key[len(prefix):] if prefix and key.startswith(prefix) else key
    family = family_of(bare)
    if family is None:
        raise UnknownFamily(f"{key!r} is not a key of any cache family; refusing to delete it")
    if dry_run:
        return family, int(client.exists(full_key(bare)))
    deleted = client.unlink(full_key(bare), lease_key(bare))
    return family, min(int(deleted), 1)


# --- warm -------------------------------------------------------------------------------------


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
    """Users who did anything in the last ``since_days`` days: a login, a coin movement, a chat
    message or a generation."""
    from accounts.models import CoinLedgerEntry, User
    from chat.models import ChatMessage
    from generation.models import Generation

    since = timezone.now() - timedelta(days=since_days)
    ids: set[int] = set(User.objects.filter(is_active=True, last_login__gte=since).values_list("id", flat=True))
    ids.update(CoinLedgerEntry.objects.filter(created_at__gte=since).values_list("user_id", flat=True).distinct())
    ids.update(ChatMessage.objects.filter(created_at__gte=since).values_list("user_id", flat=True).distinct())
    ids.update(Generation.objects.filter(created_at__gte=since).values_list("user_id", flat=True).distinct())
    return sorted(User.objects.filter(id__in=ids, is_active=True).values_list("id", flat=True))


def warm_targets(families: Iterable[KeyFamily], *, users_active_since: int | None = None) -> list[tuple[KeyFamily, dict]]:
    """The (family, parts) pairs a warm-up fills: the shared families in full, and the per-user
    families of recently active users."""
    from accounts.models import User
    from characters.models import Character
    from chat.models import ChatSession

    names = {family.name for family in families}
    targets: list[tuple[KeyFamily, dict]] = []
    if "characters:list" in names:
        targets.append((FAMILIES["characters:list"], {}))
    if "character" in names:
        for name in Character.objects.filter(is_active=True).order_by("sort_order", "id").values_list("name", flat=True):
            targets.append((FAMILIES["character"], {"name": name}))
    if "generation:settings" in names:
        targets.append((FAMILIES["generation:settings"], {}))
    per_user = names.intersection(USER_FAMILIES)
    if per_user and users_active_since is not None:
        user_ids = active_user_ids(users_active_since)
        for family_name in ("subscription:user", "subscription:stats", "user:coins"):
            if family_name in per_user:
                targets.extend((FAMILIES[family_name], {"user_id": uid}) for uid in user_ids)
        if "user:email" in per_user:
            for email in User.objects.filter(id__in=user_ids).order_by("id").values_list("email", flat=True):
                targets.append((FAMILIES["user:email"], {"email": email}))
        if "chat:history" in per_user:
            since = timezone.now() - timedelta(days=users_active_since)
            sessions = (ChatSession.objects.filter(user_id__in=user_ids, updated_at__gte=since)
                        .order_by("id").values_list("user_id", "character__name", "session_id"))
            for uid, character, session in sessions:
                targets.append((FAMILIES["chat:history"], {"user_id": uid, "character": character, "session": session}))
    return targets


def warm(targets: list[tuple[KeyFamily, dict]], *, progress: Progress = _no_progress,
         client: redis.Redis | None = None) -> WarmResult:
    """Fill these keys through the read-through path (``store.fetch``: leases, TTL caps, metrics).
    A key already cached is left alone, so a second run writes nothing."""
    client = client or redis_client()
    ping(client)
    started = time.perf_counter()
    result = WarmResult()
    for batch in _batches(targets, 500):
        keys = [full_key(family.key(**parts)) for family, parts in batch]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        before = pipe.execute()
        for (family, parts), existed in zip(batch, before, strict=True):
            if existed:
                result.already[family.name] = result.already.get(family.name, 0) + 1
                continue
            try:
                fetch(family, **parts)
            except ObjectDoesNotExist:
                result.skipped[family.name] = result.skipped.get(family.name, 0) + 1
                continue
            result.written.setdefault(family.name, 0)
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        after = pipe.execute()
        for (family, _), existed, exists in zip(batch, before, after, strict=True):
            if exists and not existed:
                result.written[family.name] = result.written.get(family.name, 0) + 1
        progress(len(batch))
    result.seconds = time.perf_counter() - started
    return result


# --- stats ------------------------------------------------------------------------------------

INFO_FIELDS = (
    "redis_version", "uptime_in_seconds", "used_memory", "used_memory_human", "maxmemory", "maxmemory_human",
    "maxmemory_policy", "evicted_keys", "expired_keys", "keyspace_hits", "keyspace_misses", "connected_clients",
    "aof_enabled", "aof_last_write_status", "rdb_last_bgsave_status", "rdb_last_save_time",
    "rdb_changes_since_last_save",
)


def _family_stats(client: redis.Redis, family: KeyFamily, sample: int) -> dict:
    count = 0
    sampled: list[str] = []
    for key in scan_family(client, family):
        count += 1
        if len(sampled) < sample:
            sampled.append(key)
    memory: list[int] = []
    ttls: list[int] = []
    for batch in _batches(sampled, 500):
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key)
            pipe.ttl(key)
        replies = pipe.execute()
        for used, ttl in zip(replies[::2], replies[1::2], strict=True):
            if used is not None:
                memory.append(int(used))
            if ttl is not None and ttl >= 0:
                ttls.append(int(ttl))
    mean = statistics.fmean(memory) if memory else 0.0
    return {
        "keys": count,
        "sampled": len(sampled),
        "memory_sample_bytes": sum(memory),
        "memory_mean_bytes": round(mean, 1),
        "memory_estimate_bytes": round(mean * count),
        "ttl_min": min(ttls) if ttls else None,
        "ttl_median": statistics.median(ttls) if ttls else None,
        "ttl_max": max(ttls) if ttls else None,
        "ttl_default": family.ttl,
    }


def redis_info(client: redis.Redis) -> dict:
    info = client.info()
    out = {name: info.get(name) for name in INFO_FIELDS}
    hits, misses = info.get("keyspace_hits", 0), info.get("keyspace_misses", 0)
    out["hit_ratio"] = round(hits / (hits + misses), 4) if hits + misses else None
    maxmemory = info.get("maxmemory") or 0
    out["memory_used_ratio"] = round(info.get("used_memory", 0) / maxmemory, 4) if maxmemory else None
    out["db_keys"] = client.dbsize()
    # A failed RDB save makes Redis refuse writes (MISCONF) unless stop-writes-on-bgsave-error is off.
    try:
        out["stop_writes_on_bgsave_error"] = client.config_get("stop-writes-on-bgsave-error").get(
            "stop-writes-on-bgsave-error")
    except redis.ResponseError:  # CONFIG may be renamed or denied by ACL on a managed Redis
        out["stop_writes_on_bgsave_error"] = None
    return out


def _prometheus_registry():
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def app_counters() -> dict:
    """The app's own counters (core.metrics), per family: hit/miss/bypass/error reads and
    deleted/deferred invalidations, plus Redis errors per operation. With PROMETHEUS_MULTIPROC_DIR
    set this is the sum over every gunicorn worker; otherwise it is this process only."""
    families: dict[str, dict[str, float]] = {
        name: {"hit": 0, "miss": 0, "bypass": 0, "error": 0, "deleted": 0, "deferred": 0} for name in FAMILIES
    }
    errors: dict[str, float] = {}
    for metric in _prometheus_registry().collect():
        for sample in metric.samples:
            if sample.name == "cache_requests_total" or sample.name == "cache_invalidations_total":
                row = families.setdefault(sample.labels.get("family", "?"), {})
                result = sample.labels.get("result", "?")
                row[result] = row.get(result, 0) + sample.value
            elif sample.name == "cache_errors_total":
                operation = sample.labels.get("operation", "?")
                errors[operation] = errors.get(operation, 0) + sample.value
    for row in families.values():
        reads = row.get("hit", 0) + row.get("miss", 0)
        row["hit_ratio"] = round(row.get("hit", 0) / reads, 4) if reads else None
    return {"families": families, "errors": errors,
            "multiprocess": bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))}


def stats(*, sample: int = 200, client: redis.Redis | None = None) -> dict:
    """What ``cache_stats`` prints and the admin page shows. Raises redis.RedisError when Redis is
    unreachable."""
    from core.cache.health import HEALTH
    from core.models import PendingInvalidation

    client = client or redis_client()
    started = time.perf_counter()
    families = {family.name: _family_stats(client, family, sample) for family in FAMILIES.values()}
    return {
        "namespace": namespace(),
        "families": families,
        "redis": redis_info(client),
        "app": app_counters(),
        "breaker": HEALTH.state,
        "pending_invalidations": PendingInvalidation.objects.count(),
        "seconds": round(time.perf_counter() - started, 3),
    }


# --- verify -----------------------------------------------------------------------------------

# Delete only if the value is still the one we judged stale: a write that re-cached meanwhile wins.
_DELETE_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end
return 0
"""


@dataclass
class Drift:
    key: str
    family: str
    reason: str  # "differs", "row gone", "unreadable"


@dataclass
class VerifyResult:
    checked: dict[str, int] = field(default_factory=dict)
    unverifiable: dict[str, int] = field(default_factory=dict)  # a hashed part cannot be turned back
    drifted: list[Drift] = field(default_factory=list)
    fixed: int = 0
    seconds: float = 0.0


def _canonical(data) -> object:
    # The database value as the cache would hold it: through the same JSON encoder and back.
    return orjson.loads(orjson.dumps(data))


def verify(families: Iterable[KeyFamily] | None = None, *, fix: bool = False, progress: Progress = _no_progress,
           client: redis.Redis | None = None) -> VerifyResult:
    """Recompute every cached value from the database with its family's reader and compare the
    ``data``. A mismatch is re-read before it counts, so a write that invalidated the key during
    the check is not reported. With ``fix`` the drifted keys are deleted (if still unchanged)."""
    from .keys import HASH_MARK

    client = client or redis_client()
    started = time.perf_counter()
    result = VerifyResult()
    prefix = namespace()
    delete_if_same = client.register_script(_DELETE_IF_SAME)
    for family in families or FAMILIES.values():
        result.checked[family.name] = 0
        for batch in _batches(scan_family(client, family), 500):
            values = client.mget(batch)
            for key, raw in zip(batch, values, strict=True):
                if raw is None:
                    continue  # expired or invalidated since the scan
                parts = family.parts_of(key[len(prefix):])
                if any(value.startswith(HASH_MARK) for value in parts.values()):
                    result.unverifiable[family.name] = result.unverifiable.get(family.name, 0) + 1
                    continue
                result.checked[family.name] += 1
                reason = _judge(family, parts, raw)
                if reason is None or client.get(key) != raw:
                    continue
                result.drifted.append(Drift(key, family.name, reason))
                if fix:
                    result.fixed += int(delete_if_same(keys=[key], args=[raw]))
            progress(len(batch))
    result.seconds = time.perf_counter() - started
    return result


def _judge(family: KeyFamily, parts: dict[str, str], raw: bytes) -> str | None:
    payload = Payload.unpack(raw)
    if payload is None:
        return "unreadable"
    try:
        cached = payload.data()
    except orjson.JSONDecodeError:
        return "unreadable"
    try:
        fresh = family.load(**parts)
    except ObjectDoesNotExist:
        return "row gone"
    return None if _canonical(fresh) == cached else "differs"


# --- README key table -------------------------------------------------------------------------

KEYS_START, KEYS_END = "<!-- keys:start -->", "<!-- keys:end -->"


def keys_table_markdown() -> str:
    """The key and TTL table of the README, generated from the registry."""
    lines = [
        "| key in Redis | holds | TTL (default) | setting | invalidated by |",
        "|---|---|---|---|---|",
    ]
    for family in FAMILIES.values():
        ttl = f"{family.default_ttl} s"
        if family.ttl_cap:
            # The cap's own docstring says why, so the README follows the code.
            doc = (import_string(family.ttl_cap).__doc__ or "").strip().splitlines()[0].rstrip(".")
            ttl += f"; capped: {doc[0].lower()}{doc[1:]}"
        lines.append(
            f"| `{family.template}` | {family.holds} | {ttl} | `{family.ttl_setting}` | {family.invalidated_by} |"
        )
    return "\n".join(lines)


def replace_keys_block(text: str) -> str:
    """``text`` with the block between the keys markers replaced by the generated table."""
    start, end = text.index(KEYS_START) + len(KEYS_START), text.index(KEYS_END)
    return text[:start] + "\n" + keys_table_markdown() + "\n" + text[end:]
