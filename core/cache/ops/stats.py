"""``cache_stats`` and the admin's cache page: per-family keys, memory and TTLs, Redis INFO,
and the app's own counters."""

from __future__ import annotations

import statistics
import time

import redis

from core import metrics

from ..client import namespace, redis_client
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


def _family_stats(client: redis.Redis, family: KeyFamily, sample: int) -> dict:
    count = 0
    sampled: list[str] = []
    for key in scan_family(client, family):
        count += 1
        if len(sampled) < sample:
            sampled.append(key)
    memory: list[int] = []
    ttls: list[int] = []
    for batch in batches(sampled, 500):
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


def stats(*, sample: int = 200, client: redis.Redis | None = None) -> dict:
    """What ``cache_stats`` prints and the admin page shows. Raises redis.RedisError when Redis is
    unreachable."""
    from core.models import PendingInvalidation

    client = client or redis_client()
    started = time.perf_counter()
    families = {family.name: _family_stats(client, family, sample) for family in FAMILIES.values()}
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
        "seconds": round(time.perf_counter() - started, 3),
    }


def noeviction_with_a_limit(info: dict) -> bool:
    """At the memory limit such a Redis refuses writes: every cache fill fails (the guide's warning)."""
    return info.get("maxmemory_policy") == "noeviction" and bool(info.get("maxmemory"))
