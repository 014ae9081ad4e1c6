"""``cache_stats`` and the admin's cache page: per-family keys, memory and TTLs, Redis INFO,
and the app's own counters."""

from __future__ import annotations

import statistics
import time

import redis
from django.conf import settings

from core import metrics

from ..client import CACHE_ERRORS, namespace, redis_client
from ..cluster import node_healths
from ..family import KeyFamily
from ..health import HEALTH
from ..registry import FAMILIES
from .common import batches, primaries, scan_family

INFO_FIELDS = (
    "redis_version", "uptime_in_seconds", "used_memory", "used_memory_human", "maxmemory", "maxmemory_human",
    "maxmemory_policy", "evicted_keys", "expired_keys", "keyspace_hits", "keyspace_misses", "connected_clients",
    "aof_enabled", "aof_last_write_status", "rdb_last_bgsave_status", "rdb_last_save_time",
    "rdb_changes_since_last_save",
)


def _family_stats(client: redis.Redis, family: KeyFamily, sample: int, users: set[int]) -> dict:
    """Keys counted over a full SCAN; MEMORY USAGE and TTL of the first ``sample`` of them. The ids
    of the users the family's keys belong to are added to ``users`` (for the per-user figures)."""
    count = 0
    sampled: list[str] = []
    prefix = namespace()
    by_user = "user_id" in family.fields
    for key in scan_family(client, family):
        count += 1
        if len(sampled) < sample:
            sampled.append(key)
        if by_user:
            parts = family.parts_of(key[len(prefix):])
            user_id = (parts or {}).get("user_id", "")  # user:email names its user only in cluster form
            if user_id.isdigit():
                users.add(int(user_id))
    memory: list[int] = []
    ttls: list[int] = []
    for batch in batches(sampled, 500):
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)  # samples=0: every element of a value, not an estimate
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
        "shared": family.shared,
        "sampled": len(sampled),
        "memory_sample_bytes": sum(memory),
        "memory_mean_bytes": round(mean, 1),
        "memory_estimate_bytes": round(mean * count),
        "ttl_min": min(ttls) if ttls else None,
        "ttl_median": statistics.median(ttls) if ttls else None,
        "ttl_max": max(ttls) if ttls else None,
        "ttl_default": family.ttl,
    }


# Sizing: what Redis needs for a number of daily users, from what is cached now (docs/operations,
# "Sizing"). The share of daily users whose keys are cached at once at the peak (active within the
# per-user TTLs), and the headroom over the keys' own bytes (allocator fragmentation, leases, the
# replication and AOF rewrite buffers, growth).
CACHED_SHARE = 0.2
HEADROOM = 1.25


def sizing(families: dict[str, dict], cached_users: int, *, daily_users: int,
           cached_share: float = CACHED_SHARE, headroom: float = HEADROOM) -> dict:
    """The projection for ``daily_users``: maxmemory = headroom x (shared bytes + daily users x
    cached share x bytes per cached user), every figure measured on the keys cached now. A
    per-user family's bytes per cached user are its estimated bytes over the users that have any
    per-user key cached (so a family only some users have, chat history, weighs what it weighs)."""
    shared = sum(row["memory_estimate_bytes"] for row in families.values() if row["shared"])
    per_family = {}
    for name, row in families.items():
        if row["shared"]:
            continue
        per_user = row["memory_estimate_bytes"] / cached_users if cached_users else 0.0
        per_family[name] = {
            "bytes_per_key": row["memory_mean_bytes"],
            "keys_per_cached_user": round(row["keys"] / cached_users, 3) if cached_users else 0.0,
            "bytes_per_cached_user": round(per_user, 1),
            "projected_bytes": round(daily_users * cached_share * per_user),
        }
    per_user = sum(row["bytes_per_cached_user"] for row in per_family.values())
    keys = shared + daily_users * cached_share * per_user
    return {
        "daily_users": daily_users,
        "cached_share": cached_share,
        "headroom": headroom,
        "cached_users_now": cached_users,
        "shared_bytes": shared,
        "bytes_per_cached_user": round(per_user, 1),
        "families": per_family,
        "keys_bytes": round(keys),
        "maxmemory_bytes": round(headroom * keys),
        "formula": (f"maxmemory = {headroom} x (shared {shared} B + {daily_users} daily users x {cached_share}"
                    f" cached at once x {per_user:.0f} B per cached user) = {headroom * keys / 2**20:.0f} MiB"),
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


_SUMMED = ("used_memory", "maxmemory", "evicted_keys", "expired_keys", "keyspace_hits", "keyspace_misses",
           "connected_clients", "rdb_changes_since_last_save", "db_keys")


def cluster_totals(nodes: dict[str, dict]) -> dict:
    """One INFO-like row for the whole cluster: counters summed over the primaries, a status
    field "ok" only if every node says so, the rest from the first node."""
    rows = list(nodes.values())
    out = dict(rows[0]) if rows else {name: None for name in (*INFO_FIELDS, "db_keys")}
    for name in _SUMMED:
        out[name] = sum(row.get(name) or 0 for row in rows)
    for name in ("aof_last_write_status", "rdb_last_bgsave_status"):
        bad = [row.get(name) for row in rows if row.get(name) != "ok"]
        out[name] = bad[0] if bad else "ok"
    out["uptime_in_seconds"] = min((row.get("uptime_in_seconds") or 0 for row in rows), default=None)
    out["used_memory_human"] = f"{out['used_memory'] / 2**20:.2f}M"
    out["maxmemory_human"] = f"{out['maxmemory'] / 2**20:.2f}M"
    hits, misses = out["keyspace_hits"], out["keyspace_misses"]
    out["hit_ratio"] = round(hits / (hits + misses), 4) if hits + misses else None
    out["memory_used_ratio"] = round(out["used_memory"] / out["maxmemory"], 4) if out["maxmemory"] else None
    return out


def app_counters() -> dict:
    """The app's own counters (core.metrics), per family: hit/miss/bypass/error reads and
    deleted/deferred/amended invalidations, plus Redis errors per operation. With PROMETHEUS_MULTIPROC_DIR
    set this is the sum over every gunicorn worker; otherwise it is this process only."""
    families: dict[str, dict[str, float | None]] = {
        name: {"hit": 0, "miss": 0, "bypass": 0, "error": 0, "deleted": 0, "deferred": 0, "amended": 0} for name in FAMILIES
    }
    errors: dict[str, float] = {}
    for metric in metrics.registry().collect():
        for sample in metric.samples:
            if sample.name == "cache_requests_total" or sample.name == "cache_invalidations_total":
                row = families.setdefault(sample.labels.get("family", "?"), {})
                result = sample.labels.get("result", "?")
                row[result] = (row.get(result) or 0) + sample.value
            elif sample.name == "cache_errors_total":
                operation = sample.labels.get("operation", "?")
                errors[operation] = errors.get(operation, 0) + sample.value
    for row in families.values():
        hits, reads = row.get("hit") or 0, (row.get("hit") or 0) + (row.get("miss") or 0)
        row["hit_ratio"] = round(hits / reads, 4) if reads else None
    return {"families": families, "errors": errors,
            "multiprocess": metrics.workers_dir() is not None}


def stats(*, sample: int = 200, daily_users: int | None = None, cached_share: float = CACHED_SHARE,
          client: redis.Redis | None = None) -> dict:
    """What ``cache_stats`` prints and the admin page shows; with ``daily_users`` the memory that
    many daily users need (``sizing``). Raises redis.RedisError when Redis is unreachable."""
    from core.models import PendingInvalidation

    client = client or redis_client()
    started = time.perf_counter()
    users: set[int] = set()
    families = {family.name: _family_stats(client, family, sample, users) for family in FAMILIES.values()}
    projection = ({"sizing": sizing(families, len(users), daily_users=daily_users, cached_share=cached_share)}
                  if daily_users is not None else {})
    nodes = {name: redis_info(node) for name, node in primaries(client).items()}  # cluster mode
    extra = {"nodes": nodes, "breakers": {name: h.state for name, h in node_healths().items()}} if nodes else {}
    return {
        "namespace": namespace(),
        "families": families,
        "redis": cluster_totals(nodes) if nodes else redis_info(client),
        **extra,
        "app": app_counters(),
        "breaker": HEALTH.state,
        "pending_invalidations": PendingInvalidation.objects.count(),
        **projection,
        "seconds": round(time.perf_counter() - started, 3),
    }


# Above this share of maxmemory, allkeys-lru is about to evict (it evicts at 100%): the operator
# raises maxmemory before evictions reach the hot families. The same threshold as the documented
# Prometheus alert on cache_redis_memory_used_ratio.
MEMORY_WARNING_RATIO = 0.9


def memory_pressure(info: dict) -> dict:
    """From an INFO row (redis_info or cluster_totals): how full Redis is and whether to warn."""
    ratio, evicted = info.get("memory_used_ratio"), info.get("evicted_keys") or 0
    warning = ""
    if ratio is not None and ratio >= MEMORY_WARNING_RATIO:
        warning = (f"memory {ratio:.0%} of maxmemory (warning at {MEMORY_WARNING_RATIO:.0%}): raise maxmemory before "
                   "evictions reach the hot keys")
    elif evicted:
        warning = f"{evicted} key(s) evicted since Redis started: maxmemory is smaller than the working set"
    return {"used_ratio": ratio, "evicted_keys": evicted, "warning": warning}


def noeviction_with_a_limit(info: dict) -> bool:
    """At the memory limit such a Redis refuses writes: every cache fill fails (the guide's warning)."""
    return info.get("maxmemory_policy") == "noeviction" and bool(info.get("maxmemory"))


class RedisMemoryCollector:
    """Prometheus figures read from Redis INFO at each scrape (each primary in cluster mode): how
    full it is against maxmemory, and the keys it evicted. A scrape that cannot reach Redis gets
    none of them (the breaker and error counters tell that story), never an error."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ratio = GaugeMetricFamily("cache_redis_memory_used_ratio",
                                  f"used_memory / maxmemory of the cache's Redis (alert at {MEMORY_WARNING_RATIO}:"
                                  " evictions come next); absent without a maxmemory.", labels=["node"])
        used = GaugeMetricFamily("cache_redis_used_memory_bytes", "used_memory of the cache's Redis.", labels=["node"])
        limit = GaugeMetricFamily("cache_redis_maxmemory_bytes", "maxmemory of the cache's Redis (0: none).",
                                  labels=["node"])
        evicted = CounterMetricFamily("cache_redis_evicted_keys", "Keys Redis evicted at maxmemory since it started.",
                                      labels=["node"])
        if not settings.CACHE_LAYER_ENABLED or HEALTH.blocking():  # no cache, or Redis just failed
            return
        try:
            client = redis_client()
            nodes = primaries(client) or {"": client}
            infos = {name: node.info("memory") | node.info("stats") for name, node in nodes.items()}
        except (*CACHE_ERRORS, NotImplementedError):  # NotImplementedError: the default cache is not django-redis
            return
        for name, info in infos.items():
            used_memory, maxmemory = info.get("used_memory", 0), info.get("maxmemory", 0)
            used.add_metric([name], used_memory)
            limit.add_metric([name], maxmemory)
            evicted.add_metric([name], info.get("evicted_keys", 0))
            if maxmemory:
                ratio.add_metric([name], used_memory / maxmemory)
        yield from (ratio, used, limit, evicted)

    def describe(self):
        return []  # no samples at registration: the collector asks Redis only when scraped


REDIS_MEMORY = RedisMemoryCollector()
