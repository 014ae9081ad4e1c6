"""What is in the cache and how Redis is doing: `manage.py cache_stats [--json] [--daily-users N]`."""

from django.core.management.base import BaseCommand, CommandError

from core.cache.client import CACHE_ERRORS
from core.cache.ops.stats import CACHED_SHARE, MEMORY_WARNING_RATIO, memory_pressure, noeviction_with_a_limit, stats
from core.management.output import json_dumps


def _fmt_bytes(value) -> str:
    value = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _fmt(value) -> str:
    return "-" if value is None else str(value)


class Command(BaseCommand):
    help = ("Per family: key count, sampled memory, TTL spread; from Redis INFO: memory, eviction, hit ratio, "
            "clients, persistence; the app's own hit/miss/error counters. With --daily-users N: the memory "
            "(maxmemory) that many daily users need, projected from the keys cached now.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument("--sample", type=int, default=200, help="keys per family sampled for memory and TTL")
        parser.add_argument("--daily-users", type=int, metavar="N",
                            help="project the memory N daily users need from the per-user figures measured now")
        parser.add_argument("--cached-share", type=float, default=CACHED_SHARE, metavar="SHARE",
                            help=f"share of the daily users whose keys are cached at once at the peak "
                                 f"(default {CACHED_SHARE})")

    def handle(self, *args, json: bool, sample: int, daily_users: int | None, cached_share: float,  # noqa: A002
               **options):
        if sample < 1:
            raise CommandError("--sample must be at least 1")
        if daily_users is not None and daily_users < 1:
            raise CommandError("--daily-users must be at least 1")
        if not 0 < cached_share <= 1:
            raise CommandError("--cached-share must be more than 0 and at most 1")
        try:
            data = stats(sample=sample, daily_users=daily_users, cached_share=cached_share)
        except CACHE_ERRORS as exc:
            raise CommandError(f"Redis is unreachable: {exc}") from exc
        if json:
            self.stdout.write(json_dumps(data))
            return
        self._print(data)

    def _print(self, data: dict) -> None:
        w = self.stdout.write
        w(f"{'family':<20} {'keys':>7} {'memory (est.)':>14} {'ttl min':>8} {'median':>8} {'max':>8} {'default':>8}")
        for name, row in data["families"].items():
            w(f"{name:<20} {row['keys']:>7} {_fmt_bytes(row['memory_estimate_bytes']):>14} {_fmt(row['ttl_min']):>8} "
              f"{_fmt(row['ttl_median']):>8} {_fmt(row['ttl_max']):>8} {row['ttl_default']:>8}")
        r = data["redis"]
        w("")
        where = "all primaries" if data.get("nodes") else "this db"
        w(f"redis {r['redis_version']}, up {r['uptime_in_seconds']} s, {r['db_keys']} keys in {where}")
        w(f"memory      {r['used_memory_human']} used of {r['maxmemory_human'] if r['maxmemory'] else 'no limit'}"
          f", policy {r['maxmemory_policy']}, evicted {r['evicted_keys']}")
        pressure = memory_pressure(r)
        if pressure["warning"]:
            w(self.style.WARNING(f"WARNING     {pressure['warning']}"))
        if noeviction_with_a_limit(r):
            w(self.style.WARNING("WARNING     policy noeviction: at the memory limit Redis refuses writes and every "
                                 "cache fill fails; use allkeys-lru"))
        ratio = "-" if r["hit_ratio"] is None else f"{r['hit_ratio']:.1%}"
        w(f"keyspace    hits {r['keyspace_hits']}, misses {r['keyspace_misses']}, hit ratio {ratio} "
          "(the whole server, all clients; the app's own per family below)")
        w(f"clients     {r['connected_clients']} connected")
        w(f"persistence aof {'on' if r['aof_enabled'] else 'off'} (last write {r['aof_last_write_status']}), "
          f"last bgsave {r['rdb_last_bgsave_status']}, stop-writes-on-bgsave-error "
          f"{_fmt(r['stop_writes_on_bgsave_error'])}")
        for name, node in data.get("nodes", {}).items():  # cluster mode: each primary, then the totals above
            w(f"node {name:<21} {node['db_keys']:>7} keys, {node['used_memory_human']} used, "
              f"evicted {node['evicted_keys']}, breaker {data['breakers'].get(name, 'closed')}")
        app = data["app"]
        w("")
        scope = "all workers" if app["multiprocess"] else "this process only (set PROMETHEUS_MULTIPROC_DIR)"
        w(f"app counters ({scope}); breaker {data['breaker']}, pending invalidations {data['pending_invalidations']}")
        w(f"{'family':<20} {'hit':>8} {'miss':>8} {'bypass':>8} {'error':>8} {'deleted':>8} {'deferred':>8} {'amended':>8}")
        for name, row in app["families"].items():
            w(f"{name:<20} " + " ".join(f"{int(row.get(k, 0)):>8}" for k in
                                        ("hit", "miss", "bypass", "error", "deleted", "deferred", "amended")))
        if app["errors"]:
            w("redis errors: " + ", ".join(f"{op} {int(n)}" for op, n in sorted(app["errors"].items())))
        if "sizing" in data:
            self._print_sizing(data["sizing"])

    def _print_sizing(self, sizing: dict) -> None:
        w = self.stdout.write
        w("")
        w(f"sizing for {sizing['daily_users']} daily users, {sizing['cached_share']:.0%} of them cached at once "
          f"(measured on {sizing['cached_users_now']} users with keys cached now)")
        if not sizing["cached_users_now"]:
            w(self.style.WARNING("WARNING     no per-user key is cached now: the projection has nothing to measure; "
                                 "run it on a warm cache (after traffic, or cache_warm --users-active-since 7)"))
        w(f"{'family':<20} {'bytes/key':>10} {'keys/user':>10} {'bytes/user':>11} {'projected':>12}")
        for name, row in sizing["families"].items():
            w(f"{name:<20} {row['bytes_per_key']:>10.0f} {row['keys_per_cached_user']:>10.2f} "
              f"{row['bytes_per_cached_user']:>11.0f} {_fmt_bytes(row['projected_bytes']):>12}")
        w(f"{'shared families':<20} {'':>10} {'':>10} {'':>11} {_fmt_bytes(sizing['shared_bytes']):>12}")
        w(sizing["formula"])
        w(f"set maxmemory {-(-sizing['maxmemory_bytes'] // 2**20)}mb (policy allkeys-lru); alert when used_memory "
          f"passes {MEMORY_WARNING_RATIO:.0%} of it or evicted_keys grows (docs/operations, Sizing)")

