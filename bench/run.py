"""make bench: the same workloads against no cache, our cache layer and django-cachalot, alternated.

Load tool: wrk (C, one thread, a Lua script for per-user tokens and the Zipf user draw). On two
cores the load generator competes with gunicorn, PostgreSQL and Redis; wrk costs a fraction of what
a Python load generator (locust) would, so it disturbs the figures least.

Each mode gets its own copy of the loaded database, its own redis-server and its own gunicorn, all
three up at once, plus two floors on the same gunicorn config: the bare floor (bench/bare.py:
Django returning constant bytes, no auth, Security+Common middleware only) and the plain
django-redis view (bench/plain.py: the same Django plus one django-redis GET of 400 bytes). A
round runs every workload (the mix twice, from a cold start and after `manage.py cache_warm` as
after a deploy, each a warm-up with the mix then measured; each cached endpoint alone: a warm pass
over the users then measured; the authenticated floor) on the three modes and both floors back to
back, the order rotating; 7 rounds by default. SQL is counted in the app (bench/app.py); figures
are medians over rounds, ratios are taken within a round first. Then bench/inproc.py measures CPU
and wall time per request in-process: the bare floor, the plain view and each endpoint batch by
batch, and each write route beside a cached read. The load average is recorded before every
round; a run on a busy machine, or one whose bare floor moved more than 15% between rounds, is
marked noisy.

    python bench/run.py [--quick] [--rounds N] [--inproc-rounds N] [--inproc-only] [--workers N] [--connections N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, data  # noqa: E402

MODES = ("none", "ours", "cachalot")
BARE = "bare"  # the bare floor's results, measured beside every single-endpoint workload
PLAIN = "plain"  # the plain django-redis view (bench/plain.py), measured beside the bare floor
FLOORS = (BARE, PLAIN)
NEAR_OFF = "near_off"  # in-process: the app with its near cache off, beside the app as configured
# Cached reads measured alone, with the route label bench/app.py counts them under.
MIXES = ("mix", "mix_warmed")  # the same mix; the second after cache_warm (ours only)
WORKLOAD_LABELS = {"mix": "mix, cold start", "mix_warmed": "mix after cache_warm"}
ENDPOINTS = {
    "subscription": "GET subscription",
    "characters": "GET characters",
    "character": "GET character",
    "chat_history": "GET chat-messages",
    "coins": "GET coins",
    "settings": "GET generation-settings",
}
FLOOR_ROUTE = "GET bench-floor"
LUA = common.ROOT / "bench" / "load.lua"
ZIPF_S = 1.1
# A run is marked noisy when the 1-minute load average before it started exceeds this per core (other
# work on the machine; during the run our own processes load it), or the bare floor's req/s varies
# by more than this between rounds.
NOISY_LOAD, NOISY_SPREAD = 0.5, 0.15


def wrk(app: common.App, order: str, endpoint: str, seconds: int, users_file: Path, population: int,
        connections: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA), app.base,
           "--", order, endpoint, str(users_file), str(ZIPF_S), str(population)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    result = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measure_bare(app: common.App, **wrk_args) -> dict:
    """The bare floor has no /metrics: throughput and latency only."""
    run = wrk(app, **wrk_args)
    return {"rps": round(run["rps"], 1), "p50_ms": round(run["p50_us"] / 1000, 2),
            "p99_ms": round(run["p99_us"] / 1000, 2), "requests": run["requests"],
            "errors": sum(run["errors"].values()), "error_detail": run["errors"]}


def measure(app: common.App, routes: set[str] | None, **wrk_args) -> dict:
    """One measured wrk run with the app's SQL and cache counters diffed around it."""
    before = app.metrics()
    run = wrk(app, **wrk_args)
    after = app.metrics()

    def delta(name: str, **where) -> float:
        return common.metric_sum(after, name, **where) - common.metric_sum(before, name, **where)

    if routes is None:  # the mix: every route but the scrapes and the floor
        reqs = delta("bench_requests_total") - delta("bench_requests_total", route="GET metrics")
        sql = delta("bench_sql_queries_total") - delta("bench_sql_queries_total", route="GET metrics")
    else:
        reqs = sum(delta("bench_requests_total", route=r) for r in routes)
        sql = sum(delta("bench_sql_queries_total", route=r) for r in routes)
    split = {}
    if routes is None:  # reads and writes of the mix apart: writes cost SQL with any cache
        req_by = _delta_by(before, after, "bench_requests_total")
        sql_by = _delta_by(before, after, "bench_sql_queries_total")
        sec_by = _delta_by(before, after, "bench_server_seconds_total")
        for kind, method in (("read", "GET "), ("write", "POST ")):
            def total(by, method=method):
                return sum(v for r, v in by.items() if r.startswith(method) and r not in ("GET metrics", FLOOR_ROUTE))

            n, q, sec = total(req_by), total(sql_by), total(sec_by)
            split[f"{kind}_requests"] = int(n)
            split[f"{kind}_sql_per_request"] = round(q / n, 3) if n else None
            split[f"{kind}_server_ms"] = round(sec / n * 1000, 2) if n else None
            split[f"{kind}_server_seconds"] = round(sec, 3)
        # Each write on its own (the target is per write), and where the reads' misses come from:
        # misses by family beside the keys the writes deleted in the same run.
        split["write_sql_by_route"] = {
            r: round(sql_by.get(r, 0.0) / n, 3) for r, n in req_by.items() if r.startswith("POST ") and n}
        split["misses_by_family"] = {
            f: int(v) for f, v in _delta_by(before, after, "cache_requests_total", "family", result="miss").items() if v}
        split["deletes_by_family"] = {
            f: int(v) for f, v in _delta_by(before, after, "cache_invalidations_total", "family", result="deleted").items()
            if v}
        split["amended_by_family"] = {
            f: int(v) for f, v in _delta_by(before, after, "cache_invalidations_total", "family", result="amended").items()
            if v}
        busy = split["read_server_seconds"] + split["write_server_seconds"]
        split["write_share_of_server_time"] = round(split["write_server_seconds"] / busy, 3) if busy else None
    hits = delta("cache_requests_total", result="hit")
    lookups = hits + delta("cache_requests_total", result="miss")
    return {
        "rps": round(run["rps"], 1),
        "p50_ms": round(run["p50_us"] / 1000, 2),
        "p99_ms": round(run["p99_us"] / 1000, 2),
        "requests": run["requests"],
        "errors": sum(run["errors"].values()),
        "error_detail": run["errors"],
        "counted_requests": int(reqs),
        "sql": int(sql),
        "sql_per_request": round(sql / reqs, 3) if reqs else None,
        "hit_ratio": round(hits / lookups, 4) if lookups else None,
        **split,
    }


def _delta_by(before: dict, after: dict, name: str, label: str = "route", **where: str) -> dict[str, float]:
    b = common.metric_by(before, name, label, **where)
    return {key: value - b.get(key, 0.0) for key, value in common.metric_by(after, name, label, **where).items()}


class Stack:
    """One mode's app: its own database (cloned from the loaded one), redis-server and gunicorn."""

    def __init__(self, mode: str, args, template: str, tokens: list[str], log: Path) -> None:
        from tests.support.harness import RedisServer

        self.mode = mode
        self.warm_seconds: list[float] = []  # cache_warm before each warmed mix
        self.database = f"{template}_{mode}"
        data.clone_database(template, self.database)
        self.redis = RedisServer("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru").start()
        try:
            self.app = common.App(mode=mode, database_url=data.database_url(self.database), redis_url=self.redis.url,
                                  workers=args.workers, log=log)
            self.app.wait_ready(tokens[0])
        except BaseException:
            # A stack that never started is not in main()'s list to clean up: leave nothing behind.
            if hasattr(self, "app"):
                self.app.stop()
            self.redis.close()
            data.drop_database(self.database)
            raise

    def close(self) -> None:
        self.app.stop()
        self.redis.close()


class BareStack:
    """The bare floor's gunicorn (bench/bare.py: no database, no Redis), or with ``plain`` the plain
    django-redis view's (bench/plain.py, on its own redis-server)."""

    def __init__(self, args, log: Path, mode: str = BARE) -> None:
        from tests.support.harness import RedisServer

        self.mode = mode
        self.redis = RedisServer().start() if mode == PLAIN else None
        try:
            self.app = common.App(mode=mode, database_url="", redis_url=self.redis.url if self.redis else "",
                                  workers=args.workers, log=log,
                                  extra_env={"DJANGO_SETTINGS_MODULE": f"bench.{mode}"})
            self.app.wait_ready("")
        except BaseException:
            if hasattr(self, "app"):
                self.app.stop()
            if self.redis:
                self.redis.close()
            raise

    def close(self) -> None:
        self.app.stop()
        if self.redis:
            self.redis.close()


def _path(name: str, i: int, scale: data.Scale) -> str:
    """The path user i reads for a workload."""
    chars = data.character_names(scale)
    return {
        "subscription": "/api/subscription",
        "characters": "/api/characters",
        "character": f"/api/characters/{chars[i % len(chars)]}",
        "chat_history": f"/api/chat/{data.user_character(i, scale)}/sessions/main/messages",
        "coins": "/api/me/coins",
        "settings": "/api/generation/settings",
        "floor": "/api/bench/floor",
    }[name]


def warm(app: common.App, name: str, population: int, tokens: list[str], scale: data.Scale) -> None:
    """One request per user of the population (and so per character), four at a time."""
    def get(i: int) -> int:
        request = urllib.request.Request(app.base + _path(name, i, scale), headers={"Authorization": f"Bearer {tokens[i - 1]}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(get, range(1, population + 1)))
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"warm pass of {name} got {sorted(set(statuses))}")


def _timed(action) -> float:
    started = time.monotonic()
    action()
    return round(time.monotonic() - started, 1)


def run_workload(stack: Stack | BareStack, name: str, args, users_file: Path, n_users: int) -> dict:
    common_args = {"users_file": users_file, "connections": args.connections}
    if stack.mode in FLOORS:  # beside each single-endpoint workload: the same user draw, constant bytes
        return measure_bare(stack.app, order="zipf", endpoint="floor", seconds=args.seconds,
                            population=args.population, **common_args)
    if name in MIXES:  # warm-up with the same mix, then measure
        if name == "mix_warmed" and stack.mode == "ours":
            # As an operator runs it after a deploy or a flush (docs/operations): the shared keys and
            # the keys of users active within each family's TTL (here: the writers of the cold mix
            # just before), at its default rate. The other modes have nothing to warm.
            stack.warm_seconds.append(_timed(lambda: stack.app.manage("cache_warm")))
        wrk(stack.app, "zipf", "mix", args.mix_warm, population=n_users, **common_args)
        return measure(stack.app, None, order="zipf", endpoint="mix", seconds=args.mix_seconds,
                       population=n_users, **common_args)
    if args.warm and stack.mode != "none":  # every user of the run once, so the measured run reads warm keys
        warm(stack.app, name, args.population, args.tokens, args.scale)
    return measure(stack.app, {ENDPOINTS.get(name, FLOOR_ROUTE)}, order="zipf", endpoint=name,
                   seconds=args.seconds, population=args.population, **common_args)


# Write routes measured in-process beside a cached read, with their request bodies ({n}: a counter).
WRITES = {
    "chat_post": ("POST", "chat", '{"content":"Tell me more about the sea, please {n}"}'),
    "generation": ("POST", "/api/generations", '{"prompt":"a lighthouse at dusk, number {n}"}'),
}
WRITE_BESIDE = "coins"  # the cached read each write batch is measured right after
WRITE_USERS = 50  # writes cycle through this many users, as the mix spreads them
WRITE_SLOWER = 0.10  # a write slower than the baseline by more than this (both measures) is flagged


class InprocServer:
    """bench/inproc.py kept running under one Django, driven a batch at a time over stdin."""

    def __init__(self, env: dict, tokens_file: Path, log) -> None:
        self.prom = tempfile.mkdtemp(prefix="bench-prom-")
        self.process = subprocess.Popen(
            [sys.executable, str(common.ROOT / "bench" / "inproc.py"), "--tokens-file", str(tokens_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=common.ROOT,
            env={**env, "PROMETHEUS_MULTIPROC_DIR": self.prom})

    def ask(self, command: dict) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("INPROC "):
                return json.loads(line.removeprefix("INPROC "))
        raise RuntimeError(f"bench/inproc.py exited with {self.process.wait()}; see bench/results/inproc.log")

    def run(self, requests: list, n: int) -> dict:
        reply = self.ask({"op": "run", "requests": requests, "n": n})
        bad = {status: k for status, k in reply["statuses"].items() if not status.startswith("2")}
        if bad:
            raise RuntimeError(f"{requests[0][0]} {requests[0][1]} answered {bad} in-process")
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # type: ignore[union-attr]  # end of input: it exits
                self.process.wait(timeout=30)
            except (subprocess.TimeoutExpired, OSError):
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.prom, ignore_errors=True)


def inproc_compare(stack: Stack, args, tokens: list[str]) -> dict:
    """CPU (and wall) time per request in-process (bench/inproc.py). Three Djangos stay up (the bare
    floor, the plain django-redis view, our app) and take turns a batch at a time: for every
    endpoint, a bare floor batch, a plain view batch, then the endpoint's batch; each write's
    batch right after a cached read's. Ratios are taken batch by batch against the bare floor and
    plain batches beside it, then their median over the rounds; the order rotates every round."""
    reads = {"floor": "/api/bench/floor", **{w: _path(w, 1, args.scale) for w in ENDPOINTS}}
    per_batch, write_batch = (50, 5) if args.quick else (300, 30)
    writers = min(WRITE_USERS, len(tokens))
    writes = {
        name: [[method, f"/api/chat/{data.user_character(i + 1, args.scale)}/sessions/main/messages"
                if path == "chat" else path, body, i] for i in range(writers)]
        for name, (method, path, body) in WRITES.items()
    }
    work = Path(tempfile.mkdtemp(prefix="bench-inproc-"))
    tokens_file = work / "tokens.txt"
    tokens_file.write_text("\n".join(tokens[:writers]) + "\n")
    base_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    envs = {
        BARE: {**base_env, "DJANGO_SETTINGS_MODULE": "bench.bare"},
        PLAIN: {**base_env, "DJANGO_SETTINGS_MODULE": "bench.plain", "REDIS_URL": stack.redis.url},
        "ours": {**base_env, "DJANGO_SETTINGS_MODULE": "config.settings.bench", "BENCH_CACHE_MODE": "ours",
                 "BENCH_COUNT_SQL": "0", "DATABASE_URL": data.database_url(stack.database),
                 "REDIS_URL": stack.redis.url},
    }
    # The same app with its near cache off (every hit a Redis round trip): before and after, one run.
    envs[NEAR_OFF] = {**envs["ours"], "CACHE_NEAR_ENABLED": "0"}
    redis_stats = stack.redis.client()

    def redis_out() -> int:
        return int(redis_stats.info("stats")["total_net_output_bytes"])

    def redis_bytes_of(batch) -> tuple[dict, float]:
        """The batch's result and the bytes Redis sent per request: the growth of the counter less
        one INFO reply (each read's own reply counts in the next read), measured just before."""
        first = redis_out()
        before = redis_out()
        result = batch()
        return result, (redis_out() - before - (before - first)) / per_batch
    floor = [["GET", "/api/bench/floor", None, 0]]
    log = open(common.RESULTS / "inproc.log", "a")
    servers: dict[str, InprocServer] = {}
    try:
        servers = {name: InprocServer(env, tokens_file, log) for name, env in envs.items()}
        for name in (BARE, PLAIN):  # warm: connections, caches, the first-request imports
            servers[name].run(floor, 20)
        for path in reads.values():
            servers["ours"].run([["GET", path, None, 0]], 20)
            servers[NEAR_OFF].run([["GET", path, None, 0]], 20)
        for requests in writes.values():
            servers["ours"].run(requests, max(writers, 5))
        calls = {name: servers[name].ask({"op": "calls", "requests": floor})["calls"] for name in (BARE, PLAIN)}
        calls["ours"] = {w: servers["ours"].ask({"op": "calls", "requests": [["GET", p, None, 0]]})["calls"]
                         for w, p in reads.items()}
        calls[NEAR_OFF] = {w: servers[NEAR_OFF].ask({"op": "calls", "requests": [["GET", p, None, 0]]})["calls"]
                           for w, p in reads.items()}
        targets = [*reads, *writes]
        runs = []
        for r in range(args.inproc_rounds):
            run: dict = {BARE: [], PLAIN: [], "ours": {}, "beside": {}, NEAR_OFF: {}}
            shift = r % len(targets)
            for target in targets[shift:] + targets[:shift]:
                bare = servers[BARE].run(floor, per_batch)
                plain = servers[PLAIN].run(floor, per_batch)
                run[BARE].append(bare["cpu_us"])
                run[PLAIN].append(plain["cpu_us"])
                if target in writes:
                    run["beside"][target] = servers["ours"].run([["GET", reads[WRITE_BESIDE], None, 0]], per_batch)
                    ours = servers["ours"].run(writes[target], write_batch)
                else:
                    # Redis bytes sent per request: only this Django talks to the stack's Redis now.
                    request = [["GET", reads[target], None, 0]]
                    ours, ours_bytes = redis_bytes_of(lambda request=request: servers["ours"].run(request, per_batch))
                    off, off_bytes = redis_bytes_of(lambda request=request: servers[NEAR_OFF].run(request, per_batch))
                    ours["redis_bytes"], off["redis_bytes"] = ours_bytes, off_bytes
                    run[NEAR_OFF][target] = {**off, "bare": bare["cpu_us"]}
                run["ours"][target] = {**ours, "bare": bare["cpu_us"], "plain": plain["cpu_us"]}
            runs.append(run)
            print(f"in-process round {r + 1}/{args.inproc_rounds}, CPU us: bare {statistics.median(run[BARE]):.0f},"
                  f" plain {statistics.median(run[PLAIN]):.0f}, "
                  + ", ".join(f"{t} {v['cpu_us']:.0f}" for t, v in run["ours"].items()), flush=True)
    finally:
        for server in servers.values():
            server.close()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    bare_rounds = [statistics.median(run[BARE]) for run in runs]
    plain_rounds = [statistics.median(run[PLAIN]) for run in runs]
    return {
        "rounds": len(runs),
        "per_batch": per_batch,
        "write_batch": write_batch,
        "bare": median(bare_rounds),
        "bare_rounds": [round(x, 1) for x in bare_rounds],
        "bare_spread": round(max(bare_rounds) / min(bare_rounds) - 1, 4),
        "plain": median(plain_rounds),
        "plain_rounds": [round(x, 1) for x in plain_rounds],
        "ours": {w: median([run["ours"][w]["cpu_us"] for run in runs]) for w in reads},
        "ours_wall": {w: median([run["ours"][w]["wall_us"] for run in runs]) for w in reads},
        "ratio": {w: median([run["ours"][w]["cpu_us"] / run["ours"][w]["bare"] for run in runs]) for w in reads},
        "ratio_plain": {w: median([run["ours"][w]["cpu_us"] / run["ours"][w]["plain"] for run in runs]) for w in reads},
        "plain_ratio": median([p / b for p, b in zip(plain_rounds, bare_rounds, strict=True)]),
        "ratio_spread": {w: [round(min(v), 2), round(max(v), 2)] for w in reads
                         for v in [[run["ours"][w]["cpu_us"] / run["ours"][w]["bare"] for run in runs]]},
        "redis_bytes": {w: median([run["ours"][w]["redis_bytes"] for run in runs]) for w in reads},
        "near_off": {
            "ours": {w: median([run[NEAR_OFF][w]["cpu_us"] for run in runs]) for w in reads},
            "ratio": {w: median([run[NEAR_OFF][w]["cpu_us"] / run[NEAR_OFF][w]["bare"] for run in runs]) for w in reads},
            "ratio_spread": {w: [round(min(v), 2), round(max(v), 2)] for w in reads
                             for v in [[run[NEAR_OFF][w]["cpu_us"] / run[NEAR_OFF][w]["bare"] for run in runs]]},
            "redis_bytes": {w: median([run[NEAR_OFF][w]["redis_bytes"] for run in runs]) for w in reads},
        },
        "writes": {w: {
            "cpu_us": median([run["ours"][w]["cpu_us"] for run in runs]),
            "wall_us": median([run["ours"][w]["wall_us"] for run in runs]),
            "read_cpu_us": median([run["beside"][w]["cpu_us"] for run in runs]),
            "read_wall_us": median([run["beside"][w]["wall_us"] for run in runs]),
            "cpu_vs_read": median([run["ours"][w]["cpu_us"] / run["beside"][w]["cpu_us"] for run in runs]),
            "wall_vs_read": median([run["ours"][w]["wall_us"] / run["beside"][w]["wall_us"] for run in runs]),
        } for w in writes},
        "write_beside": WRITE_BESIDE,
        "noisy": max(bare_rounds) / min(bare_rounds) - 1 > NOISY_SPREAD,
        "calls": {"bare": calls[BARE], "plain": calls[PLAIN], "ours": calls["ours"], NEAR_OFF: calls[NEAR_OFF]},
        "runs": runs,
    }


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarise(rounds: list[dict]) -> tuple[dict, dict]:
    workloads = [w for w in (*MIXES, *ENDPOINTS, "floor") if w in rounds[0]["ours"]]
    med = {
        mode: {
            w: {k: median([r[mode][w][k] for r in rounds])
                for k in ("rps", "p50_ms", "p99_ms", "sql_per_request", "hit_ratio", "read_sql_per_request",
                          "read_requests", "write_requests",
                          "write_sql_per_request", "read_server_ms", "write_server_ms", "write_share_of_server_time")
                if k in rounds[0][mode][w]}
            for w in workloads
        }
        for mode in MODES
    }
    derived = {}
    for w in workloads:
        def ratio(a_mode, b_mode, b_workload=None, *, w=w):
            return median([r[a_mode][w]["rps"] / r[b_mode][b_workload or w]["rps"] for r in rounds])

        none_sql = med["none"][w]["sql_per_request"]
        ours_sql = med["ours"][w]["sql_per_request"]
        derived[w] = {
            "db_load_reduction": round(1 - ours_sql / none_sql, 4) if none_sql else None,
            "cachalot_db_load_reduction": (round(1 - med["cachalot"][w]["sql_per_request"] / none_sql, 4)
                                           if none_sql else None),
            "speedup_vs_none": ratio("ours", "none"),
            "ratio_vs_cachalot": ratio("ours", "cachalot"),
            "cachalot_speedup_vs_none": ratio("cachalot", "none"),
            "share_of_floor": ratio("ours", "ours", "floor"),
        }
        if w not in MIXES and BARE in rounds[0]:
            derived[w]["share_of_bare_floor"] = median([r["ours"][w]["rps"] / r[BARE][w]["rps"] for r in rounds])
            derived[w]["cachalot_share_of_bare_floor"] = median(
                [r["cachalot"][w]["rps"] / r[BARE][w]["rps"] for r in rounds])
        if w not in MIXES and PLAIN in rounds[0]:
            derived[w]["share_of_plain"] = median([r["ours"][w]["rps"] / r[PLAIN][w]["rps"] for r in rounds])
            derived[w]["plain_share_of_bare_floor"] = median([r[PLAIN][w]["rps"] / r[BARE][w]["rps"] for r in rounds])
    for w in (w for w in MIXES if w in workloads):
        for mode in MODES:
            mixes = [r[mode][w] for r in rounds]
            routes = sorted({route for m in mixes for route in m.get("write_sql_by_route", {})})
            med[mode][w]["write_sql_by_route"] = {
                route: median([m["write_sql_by_route"].get(route) for m in mixes]) for route in routes}
            for k in ("misses_by_family", "deletes_by_family", "amended_by_family"):  # summed over the rounds
                total: dict[str, int] = {}
                for m in mixes:
                    for family, v in m.get(k, {}).items():
                        total[family] = total.get(family, 0) + v
                med[mode][w][k] = total
    for floor in FLOORS:
        if floor in rounds[0]:
            med[floor] = {w: {"rps": median([r[floor][w]["rps"] for r in rounds])} for w in rounds[0][floor]}
    return med, derived


ROUNDS: list[dict] = []  # set by main() and --render, for bounds computed round by round


def check_targets(med: dict, derived: dict, inproc: dict | None = None) -> list[dict]:
    """Each target with its measured value and, when missed, why, in figures from this run."""
    cached = list(ENDPOINTS)
    targets = []
    worst_sql = max(cached, key=lambda w: med["ours"][w]["sql_per_request"] or 0)
    value = med["ours"][worst_sql]["sql_per_request"]
    targets.append({"target": "zero SQL on warm cached reads", "met": value == 0,
                    "value": f"max {value} SQL/request ({worst_sql})"})
    # The reads of the mix (the read-reduction target's), after cache_warm as after a deploy when that run
    # exists; the cold start (no cache_warm, every user's first request a miss) beside it.
    warmed = "mix_warmed" if "mix_warmed" in derived else "mix"
    mix = {mode: med[mode][warmed] for mode in MODES}
    cold = {mode: med[mode]["mix"] for mode in MODES}

    def read_reduction(m: dict) -> float | None:
        none = m["none"].get("read_sql_per_request")
        return 1 - m["ours"]["read_sql_per_request"] / none if none else None

    reads, cold_reads = read_reduction(mix), read_reduction(cold)
    red, cold_red = derived[warmed]["db_load_reduction"], derived["mix"]["db_load_reduction"]
    write_sql = ", ".join(f"{m} {mix[m]['write_sql_per_request']:.1f}" for m in MODES)
    label = "after cache_warm" if warmed == "mix_warmed" else "cold start"
    targets.append({"target": ">= 95% fewer SQL per read on the mix than no cache",
                    "met": reads is not None and reads >= 0.95,
                    "value": (f"{reads:.1%} fewer {label} ({mix['none']['read_sql_per_request']:.2f} ->"
                              f" {mix['ours']['read_sql_per_request']:.3f} SQL per read)"
                              + ("" if reads >= 0.95 else f", {0.95 - reads:.1%} short")
                              + (f"; cold start (no cache_warm) {cold_reads:.1%} fewer"
                                 f" ({cold['ours']['read_sql_per_request']:.3f} SQL per read)" if warmed != "mix" else "")
                              + f"; the whole mix, writes included, {red:.1%} fewer"
                              + (f" ({cold_red:.1%} cold)" if warmed != "mix" else "")
                              + f"; writes cost {write_sql} SQL each (none, ours, cachalot)")})
    targets[-1]["why"] = (
        f"reads add {mix['ours']['read_sql_per_request']:.3f} SQL each from their misses (hit ratio"
        f" {mix['ours']['hit_ratio']}):" + _misses_why(mix["ours"]))
    # Writes' statement counts are reported above ("writes cost ... SQL each"), not judged: the
    # write path is plain per-app services, timed in-process beside a cached read instead.
    sp = derived["characters"]["speedup_vs_none"]
    floor_bound = median([r["ours"]["floor"]["rps"] / r["none"]["characters"]["rps"] for r in ROUNDS])
    targets.append({"target": "cached character list >= 6x uncached", "met": sp >= 6,
                    "value": f"{sp:.2f}x" + ("" if sp >= 6 else f" ({6 - sp:.2f}x short)"),
                    "why": f"the uncached list runs only {med['none']['characters']['sql_per_request']:.1f} SQL per request"
                           f" and the cached one runs at {derived['characters']['share_of_floor']:.0%} of the"
                           f" authenticated floor, which itself is only {floor_bound:.2f}x the uncached list here:"
                           " the per-request cost both share (HTTP, middleware, JWT) bounds the ratio"})
    worst_floor = min(cached, key=lambda w: derived[w]["share_of_floor"])
    share = derived[worst_floor]["share_of_floor"]
    targets.append({"target": "every cached read >= 60% of the authenticated floor", "met": share >= 0.6,
                    "value": f"min {share:.0%} ({worst_floor})" + ("" if share >= 0.6 else f", {0.6 - share:.0%} short")})
    if "share_of_bare_floor" in derived[cached[0]]:
        worst_bare = min(cached, key=lambda w: derived[w]["share_of_bare_floor"])
        bare = derived[worst_bare]["share_of_bare_floor"]
        auth_floor = derived["floor"]["share_of_bare_floor"]
        targets.append({"target": "every cached read >= 50% of the bare floor's req/s", "met": bare >= 0.5,
                        "value": f"min {bare:.0%} ({worst_bare})" + ("" if bare >= 0.5 else f", {0.5 - bare:.0%} short"),
                        "why": f"our authenticated floor (constant bytes behind the same JWT, user read, middleware and lane) is"
                               f" itself {auth_floor:.0%} of the bare floor: that per-request overhead, not the cached"
                               " read, is most of the gap"})
    if inproc:
        ratios = inproc["ratio"]
        worst_cpu = max(cached, key=lambda w: ratios[w])
        cpu = ratios[worst_cpu]
        targets.append({"target": "in-process CPU of every cached read <= 3.5x the bare floor's", "met": cpu <= 3.5,
                        "value": f"max {cpu:.2f}x ({worst_cpu}: {inproc['ours'][worst_cpu]:.0f} us vs"
                                 f" {inproc['bare']:.0f} us)" + ("" if cpu <= 3.5 else f", {cpu - 3.5:.2f}x over"),
                        "why": f"the authenticated floor alone costs {ratios['floor']:.2f}x the bare floor's CPU"
                               f" ({inproc['ours']['floor']:.0f} us): JWT, the user read and middleware before any other cache read"
                               + (f", {inproc['calls']['ours']['floor']} function calls per request to the bare floor's"
                                  f" {inproc['calls']['bare']}" if inproc.get("calls") else "")})
    worst_cl = min(cached, key=lambda w: derived[w]["ratio_vs_cachalot"])
    rc = derived[worst_cl]["ratio_vs_cachalot"]
    bound = median([r["ours"]["floor"]["rps"] / r["cachalot"][worst_cl]["rps"] for r in ROUNDS])
    targets.append({"target": "every cached read >= 4x cachalot", "met": rc >= 4,
                    "value": f"min {rc:.2f}x ({worst_cl})" + ("" if rc >= 4 else f", {4 - rc:.2f}x short"),
                    "why": f"warm, cachalot runs {med['cachalot'][worst_cl]['sql_per_request']:.2f} SQL per request on"
                           f" {worst_cl} (no cache: {med['none'][worst_cl]['sql_per_request']:.2f}), its hit costs SQL"
                           f" compilation, Redis round trips and unpickling; even our authenticated floor is only"
                           f" {bound:.2f}x cachalot's {worst_cl}"})
    return targets


def _misses_why(mix: dict) -> str:
    misses, deletes = mix.get("misses_by_family") or {}, mix.get("deletes_by_family") or {}
    amended = mix.get("amended_by_family") or {}
    if not misses:
        return ""
    total = sum(misses.values())
    return (" misses by family (all rounds) " + ", ".join(
        f"{f} {n} ({n / total:.0%})" for f, n in sorted(misses.items(), key=lambda x: -x[1]))
        + "; in the same runs the writes amended " + (", ".join(
            f"{f} {n}" for f, n in sorted(amended.items(), key=lambda x: -x[1])) or "nothing")
        + " and deleted " + (", ".join(
            f"{f} {n}" for f, n in sorted(deletes.items(), key=lambda x: -x[1])) or "nothing")
        + " (a key not cached when the write began, or changed by another commit meanwhile, is deleted and"
        " misses on its next read)")


def _first_requests(result: dict) -> str:
    """The cold mix's share of requests that missed the user's own key: the user's first request."""
    reads = sum(r["ours"]["mix"].get("read_requests", 0) + r["ours"]["mix"].get("write_requests", 0)
                for r in result["rounds"])
    firsts = sum(r["ours"]["mix"].get("misses_by_family", {}).get("user:email", 0) for r in result["rounds"])
    return f"{firsts / reads:.0%}" if reads else "n/a"


def fmt(v, spec="{:.0f}"):
    return "n/a" if v is None else spec.format(v)


def inproc_markdown(inproc: dict) -> list[str]:
    """The in-process section: floors, cached reads against both, writes beside a cached read."""
    if "plain" not in inproc:  # a result from before the plain view and the writes
        return [f"CPU per request in-process: bare floor {inproc['bare']:.0f} us; "
                + ", ".join(f"{w} {inproc['ours'][w]:.0f} us ({inproc['ratio'][w]:.2f}x)" for w in inproc["ours"]) + "."]
    spread = inproc["bare_spread"]
    lines = [
        f"CPU per request in-process (bench/inproc.py: the WSGI handler in a loop, no HTTP, no SQL counting;"
        f" {inproc['rounds']} rounds, each endpoint's batch of {inproc['per_batch']} right after a batch of the bare"
        f" floor and one of the plain django-redis view, ratios taken batch by batch, medians over the rounds):"
        f" bare floor {inproc['bare']:.0f} us (per round {', '.join(f'{x:.0f}' for x in inproc['bare_rounds'])};"
        f" spread {spread:.0%})"
        + (f" **NOISY: the bare floor varied {spread:.0%} between rounds (over {NOISY_SPREAD:.0%}); read the ratios,"
           " not the microseconds**" if spread > NOISY_SPREAD else "")
        + f"; plain django-redis view {inproc['plain']:.0f} us ({inproc['plain_ratio']:.2f}x the bare floor).",
        "",
        "| endpoint | CPU us | wall us | x bare floor | x plain django-redis | function calls |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    calls = inproc.get("calls", {})
    lines.append(f"| bare floor | {inproc['bare']:.0f} | | 1.00x | | {calls.get('bare', '')} |")
    lines.append(f"| plain django-redis view | {inproc['plain']:.0f} | | {inproc['plain_ratio']:.2f}x | 1.00x"
                 f" | {calls.get('plain', '')} |")
    for w, cpu in inproc["ours"].items():
        lines.append(f"| {'authenticated floor' if w == 'floor' else w} | {cpu:.0f} | {inproc['ours_wall'][w]:.0f}"
                     f" | {inproc['ratio'][w]:.2f}x | {inproc['ratio_plain'][w]:.2f}x"
                     f" | {calls.get('ours', {}).get(w, '')} |")
    off = inproc.get("near_off")
    if off:
        lines += ["", "Near cache on (the app as configured) and off (`CACHE_NEAR_ENABLED=0`, every hit a Redis round"
                  " trip), each batch right after the same bare floor batch; ratio medians with their range over the"
                  " rounds; Redis bytes sent per request (INFO total_net_output_bytes over the batch):", "",
                  "| endpoint | near on: x bare floor | range | Redis bytes | calls | near off: x bare floor | range"
                  " | Redis bytes | calls |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        calls = inproc.get("calls", {})
        for w in inproc["ours"]:
            on_range, off_range = inproc["ratio_spread"][w], off["ratio_spread"][w]
            lines.append(f"| {'authenticated floor' if w == 'floor' else w} | {inproc['ratio'][w]:.2f}x"
                         f" | {on_range[0]:.2f}-{on_range[1]:.2f} | {inproc['redis_bytes'][w]:.0f}"
                         f" | {calls.get('ours', {}).get(w, '')}"
                         f" | {off['ratio'][w]:.2f}x | {off_range[0]:.2f}-{off_range[1]:.2f} | {off['redis_bytes'][w]:.0f}"
                         f" | {calls.get(NEAR_OFF, {}).get(w, '')} |")
    beside = inproc["write_beside"]
    lines += ["", f"Writes in-process, each batch of {inproc['write_batch']} (cycling over the bench users) right after a"
              f" batch of the cached read `{beside}`; wall time includes PostgreSQL and Redis:", "",
              "| write | CPU us | wall us | cached read beside: CPU us | wall us | write / read CPU | write / read wall |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for w, row in inproc["writes"].items():
        lines.append(f"| {w} | {row['cpu_us']:.0f} | {row['wall_us']:.0f} | {row['read_cpu_us']:.0f}"
                     f" | {row['read_wall_us']:.0f} | {row['cpu_vs_read']:.1f}x | {row['wall_vs_read']:.1f}x |")
    baseline = inproc.get("baseline")
    if baseline:
        lines += ["", f"Writes against the baseline ({baseline['source']}, {baseline['date']}): the change of each median,"
                  " and of the write / cached read ratio, which a busier or quieter machine moves less. A write more"
                  f" than {WRITE_SLOWER:.0%} slower is flagged.", "",
                  "| write | CPU us then / now | change | write / read CPU then / now | change |", "|---|---:|---:|---:|---:|"]
        for w, row in inproc["writes"].items():
            then = baseline["writes"].get(w)
            if not then:
                continue
            cpu, ratio = row["cpu_us"] / then["cpu_us"] - 1, row["cpu_vs_read"] / then["cpu_vs_read"] - 1
            flag = " **SLOWER**" if min(cpu, ratio) > WRITE_SLOWER else ""
            lines.append(f"| {w} | {then['cpu_us']:.0f} / {row['cpu_us']:.0f} | {cpu:+.0%} | {then['cpu_vs_read']:.1f}x /"
                         f" {row['cpu_vs_read']:.1f}x | {ratio:+.0%}{flag} |")
    return lines


def markdown(result: dict) -> str:
    med, der = result["median"], result["derived"]
    m = result["machine"]
    lines = [
        f"Run {result['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; PostgreSQL {result['postgres']},"
        f" Redis {m['redis']}, Python {m['python']}; gunicorn {result['config']['workers']} sync workers, wrk"
        f" {result['config']['connections']} connections; {result['config']['rounds']} alternated rounds, medians"
        f"{' (QUICK: tiny data, seconds per run; not a measurement)' if result['config']['quick'] else ''}.",
    ]
    load = result.get("load")
    if load:
        lines.append(f"Load average (1 min) before the run {load['before']:.2f}, before each round"
                     f" {', '.join(f'{x:.2f}' for x in load['rounds'])} on {m['cores']} cores; bare floor spread across"
                     f" rounds {load['bare_spread']:.0%}."
                     + (f" **NOISY RUN**: {load['noisy']}; ratios within a round hold better than absolute figures."
                        if load["noisy"] else ""))
    lines += [
        "",
        "| workload | req/s none | req/s ours | req/s cachalot | req/s bare floor | req/s plain django-redis | p50 / p99 ms ours | p50 / p99 ms none | SQL/req none | SQL/req ours | SQL/req cachalot | DB load vs none | speedup vs none | ours / cachalot | share of floor | share of bare floor | share of plain django-redis |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    bare, plain = med.get(BARE, {}), med.get(PLAIN, {})
    for w in med["ours"]:
        d = der[w]
        red = d["db_load_reduction"]
        lines.append(
            f"| {WORKLOAD_LABELS.get(w, w)} | {fmt(med['none'][w]['rps'])} | {fmt(med['ours'][w]['rps'])} | {fmt(med['cachalot'][w]['rps'])}"
            f" | {fmt(bare.get(w, {}).get('rps'))} | {fmt(plain.get(w, {}).get('rps'))}"
            f" | {fmt(med['ours'][w]['p50_ms'], '{:.1f}')} / {fmt(med['ours'][w]['p99_ms'], '{:.1f}')}"
            f" | {fmt(med['none'][w]['p50_ms'], '{:.1f}')} / {fmt(med['none'][w]['p99_ms'], '{:.1f}')}"
            f" | {fmt(med['none'][w]['sql_per_request'], '{:.2f}')} | {fmt(med['ours'][w]['sql_per_request'], '{:.3f}')}"
            f" | {fmt(med['cachalot'][w]['sql_per_request'], '{:.2f}')}"
            f" | {'-' + format(red, '.1%') if red is not None else 'n/a'}"
            f" | {fmt(d['speedup_vs_none'], '{:.2f}x')} | {fmt(d['ratio_vs_cachalot'], '{:.2f}x')}"
            f" | {fmt(d['share_of_floor'], '{:.0%}') if w != 'floor' else '100%'}"
            f" | {fmt(d.get('share_of_bare_floor'), '{:.0%}')} | {fmt(d.get('share_of_plain'), '{:.0%}')} |"
        )
    mix = {mode: med[mode]["mix"] for mode in MODES}
    if mix["ours"].get("read_server_ms") is not None:
        lines += ["", "The mix, inside Django (mean per request): reads "
                  + ", ".join(f"{m} {mix[m]['read_server_ms']:.1f} ms" for m in MODES)
                  + "; writes " + ", ".join(f"{m} {mix[m]['write_server_ms']:.1f} ms" for m in MODES)
                  + f". Writes are 10% of the requests but {mix['ours']['write_share_of_server_time']:.0%} of the"
                  " server time with our cache: they bound the mix's speedup (Amdahl) and its SQL reduction, since"
                  " every mode runs them against PostgreSQL."]
    if result.get("inproc"):
        lines += ["", *inproc_markdown(result["inproc"])]
    lines += ["", "Targets:", ""]
    for t in result["targets"]:
        why = f". Why: {t['why']}." if not t["met"] and t.get("why") else ""
        lines.append(f"- {'met' if t['met'] else 'NOT MET'}: {t['target']} - {t['value']}{why}")
    lines += ["", f"Non-2xx responses or socket errors across all runs: {result['errors']}.",
              "SQL counted per request by a bench-only middleware (Django execute_wrapper, summed over workers"
              " through /metrics; every statement counts, the connection health check's SELECT 1, once per"
              " request that touches the database, included). Single-endpoint runs draw users from a Zipf(1.1) over the hottest"
              f" {result['config']['population']} users, after a warm pass that reads each of them once (not in"
              f" the no-cache mode). The mix runs last, after a {result['config'].get('mix_warm', 3)} s warm-up with the mix"
              " itself, 90% reads and 10% writes (chat posts, generations), users"
              f" from a Zipf(1.1) over all {result['config']['data']['users']} users. It runs twice: from a cold start,"
              f" where every user's first request misses ({_first_requests(result)} of the requests were a user's"
              f" first in the run; hit ratio of our layer {result['median']['ours']['mix']['hit_ratio']}), and after `manage.py cache_warm"
              "` (its defaults: shared keys, users active within each family's TTL) as an operator runs it after a deploy or a flush (our layer only; it took"
              f" {', '.join(f'{x:.0f}' for x in result['config'].get('cache_warm_seconds') or []) or 'n/a'} s per round;"
              f" hit ratio {result['median']['ours'].get('mix_warmed', {}).get('hit_ratio')})."
              " The bare floor (bench/bare.py) is Django with Security+Common middleware returning constant bytes,"
              " measured beside every single-endpoint workload. django-cachalot runs with its documented setting for"
              " tables written often (CACHALOT_UNCACHABLE_TABLES: chat, generations, ledger, daily usage), so its"
              " chat history reads run SQL."]
    return "\n".join(lines) + "\n"


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = result["median"]
    workloads = list(med["ours"])
    colors = {"none": "#9e9e9e", "ours": "#1f77b4", "cachalot": "#ff7f0e"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.27
    xs = range(len(workloads))
    for k, mode in enumerate(MODES):
        vals = [med[mode][w]["rps"] or 0 for w in workloads]
        ax1.bar([x + (k - 1) * width for x in xs], vals, width, label=mode, color=colors[mode])
    for x, w in zip(xs, workloads, strict=True):
        sp = result["derived"][w]["speedup_vs_none"]
        top = max(med[m][w]["rps"] or 0 for m in MODES)
        ax1.annotate(f"{sp:.1f}x", (x, top), ha="center", va="bottom", fontsize=8)
    floor = med["ours"]["floor"]["rps"]
    if floor:
        ax1.axhline(floor, color=colors["ours"], linestyle="--", linewidth=0.8,
                    label="floor: constant bytes, same auth (ours)")
    bare = med.get(BARE, {}).get("floor", {}).get("rps")
    if bare:
        ax1.axhline(bare, color="black", linestyle=":", linewidth=0.8, label="bare floor: constant bytes, no auth")
    plain = med.get(PLAIN, {}).get("floor", {}).get("rps")
    if plain:
        ax1.axhline(plain, color="#2ca02c", linestyle="-.", linewidth=0.8, label="plain django-redis view")
    ax1.set_xticks(list(xs), [WORKLOAD_LABELS.get(w, w) for w in workloads], rotation=25, ha="right")
    ax1.set_ylabel("requests/s (higher is better)")
    ax1.set_title("Throughput; label = ours vs no cache")
    ax1.set_ylim(0, 1.35 * max([bare or 0, plain or 0] + [med[m][w]["rps"] or 0 for m in MODES for w in workloads]))  # room for the legend
    ax1.legend(loc="upper left", fontsize=8, ncol=2)
    reads = [w for w in workloads if w != "floor"]
    for k, mode in enumerate(MODES):
        vals = [med[mode][w]["sql_per_request"] or 0 for w in reads]
        ax2.bar([x + (k - 1) * width for x in range(len(reads))], vals, width, label=mode, color=colors[mode])
        for x, v in enumerate(vals):
            ax2.annotate("0" if v == 0 else f"{v:.2g}", (x + (k - 1) * width, v), ha="center", va="bottom", fontsize=6)
    ax2.set_xticks(list(range(len(reads))), [WORKLOAD_LABELS.get(w, w) for w in reads], rotation=25, ha="right")
    ax2.set_ylabel("SQL queries per request (lower is better)")
    ax2.set_title("Database load")
    m = result["machine"]
    fig.suptitle(f"make bench {result['date']} - {m['cores']} cores, {m['cpu'][:40]}"
                 f"{' - QUICK (not a measurement)' if result['config']['quick'] else ''}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(result: dict, table: str) -> None:
    readme = common.ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        print("README.md has no bench markers; left alone")
        return
    chaos = ""
    chaos_file = common.RESULTS / "chaos.json"
    if chaos_file.exists():
        c = json.loads(chaos_file.read_text())
        rec = c["hit_ratio_recovery"]
        chaos = (f"\n### Faults: `make chaos` ({c['date']})\n\nRedis SIGKILLed at 10 s, restarted from its AOF at 20 s,"
                 f" frozen (SIGSTOP) from 30 to 40 s, under steady mixed load: {c['requests']} requests,"
                 f" **{c['5xx']} 5xx**, **{c['timeouts']} client timeouts**, **{c['stale_check']['stale']} stale"
                 f" reads** of {c['stale_check']['reads']} compared with the database after quiescence; hit ratio"
                 f" back to 90% of steady {rec.get('after_restart_s')} s after the restart and"
                 f" {rec.get('after_resume_s')} s after SIGCONT. Per-phase latency: `bench/results/chaos.md`.\n")
    block = (f"{start}\n### Benchmark: `make bench` ({result['date']})\n\n"
             "No cache (DummyCache) vs this cache layer vs django-cachalot: the same workloads through gunicorn,"
             " driven by wrk, alternated; every round in `bench/results/latest.json`. `make bench-quick` is the"
             " seconds-long CI variant; `BENCH_ARGS='--workers 3 --rounds 5' make bench` changes the setup.\n\n"
             f"![benchmark chart](bench/results/latest.png)\n\n{table}{chaos}{end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + block + tail)


def _add_baseline(inproc: dict, path: Path | None) -> None:
    """The writes of an earlier run beside this one's (--baseline)."""
    if path is None:
        return
    earlier = json.loads(path.read_text())
    writes = (earlier.get("inproc") or {}).get("writes")
    if not writes:
        print(f"{path} has no in-process writes; no baseline", file=sys.stderr)
        return
    inproc["baseline"] = {"source": str(path), "date": earlier.get("date", "?"), "writes": writes}


def _report_inproc(args, inproc: dict, started: float) -> int:
    """--inproc-only: the in-process figures alone, in bench/results/inproc.json and .md."""
    m = common.machine()
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": m, "quick": args.quick,
              "inproc": inproc, "elapsed_s": round(time.monotonic() - started, 1)}
    text = "\n".join([
        f"In-process run {result['date']} on {m['cpu']}, {m['cores']} cores; Python {m['python']}, Redis {m['redis']};"
        f" load average (1 min) at the start {m['load_average_at_start'][0]:.2f}"
        f"{' (QUICK: tiny data; not a measurement)' if args.quick else ''}.", "", *inproc_markdown(inproc)]) + "\n"
    name = "inproc-quick" if args.quick else "inproc"
    (common.RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (common.RESULTS / f"{name}.md").write_text(text)
    print(text)
    print(f"wrote bench/results/{name}.json, .md in {result['elapsed_s']} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data, ~1 s per run, two rounds (CI)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (default 4)")
    parser.add_argument("--database", default="bench_chatart")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the bench database at the end")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--modes", default=",".join(MODES), help="development: a subset, e.g. ours")
    parser.add_argument("--seconds", type=int, help="development: seconds per measured single-endpoint run")
    parser.add_argument("--workloads", default=",".join((*ENDPOINTS, "floor", *MIXES)),
                        help="development: a subset, e.g. mix (prints the raw rounds, writes no results)")
    parser.add_argument("--inproc-rounds", type=int, help="alternated in-process rounds (default 7, quick 2)")
    parser.add_argument("--inproc-only", action="store_true",
                        help="only the in-process part (floors, cached reads, writes): bench/results/inproc.*")
    parser.add_argument("--baseline", type=Path, metavar="JSON",
                        help="an earlier inproc.json or latest.json: report each write's change against it")
    parser.add_argument("--render", action="store_true", help="only redraw table, chart and README from latest.json")
    args = parser.parse_args()
    if args.render:
        result = json.loads((common.RESULTS / "latest.json").read_text())
        ROUNDS[:] = result["rounds"]
        result["targets"] = check_targets(result["median"], result["derived"], result.get("inproc"))
        table = markdown(result)
        (common.RESULTS / "latest.md").write_text(table)
        chart(result, common.RESULTS / "latest.png")
        update_readme(result, table)
        return 0
    scale = data.QUICK if args.quick else data.FULL
    # At least two rounds even when quick: a spread needs two; seven for a measurement.
    args.rounds = args.rounds or (2 if args.quick else 7)
    args.seconds = args.seconds or (1 if args.quick else 3)
    if args.inproc_rounds is None:
        args.inproc_rounds = 2 if args.quick else 7
    # The mix warms up with itself long enough for the popular users to be warm in every mode.
    args.mix_seconds, args.mix_warm = (2, 1) if args.quick else (8, 10)
    args.population = 50 if args.quick else 200
    args.warm = True
    args.scale = scale
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (make bench does this)", file=sys.stderr)
        return 2
    started = time.monotonic()
    database_url = data.database_url(args.database)
    data.recreate_database(args.database)
    common.setup_django(database_url)
    common.migrate()
    counts = data.load(database_url, scale)
    print(f"loaded {counts}", flush=True)
    tokens = args.tokens = common.mint_tokens(scale.users)
    from django.db import connections

    connections.close_all()  # the template database must have no sessions to be cloned
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    users_file = work / "users.txt"
    with open(users_file, "w") as f:
        f.write("chars " + " ".join(data.character_names(scale)) + "\n")
        for i, token in enumerate(tokens, 1):
            f.write(f"{token} {data.user_character(i, scale)} main\n")
    log = common.RESULTS / "gunicorn-bench.log"
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    modes = ["ours"] if args.inproc_only else [m for m in MODES if m in args.modes.split(",")]
    stacks: dict[str, Stack | BareStack] = {}
    rounds = []
    load = {"before": os.getloadavg()[0], "rounds": []}
    inproc = None
    try:
        for mode in modes:
            stacks[mode] = Stack(mode, args, args.database, tokens, log)
        if args.inproc_only:
            inproc = inproc_compare(stacks["ours"], args, tokens)
            _add_baseline(inproc, args.baseline)
            return _report_inproc(args, inproc, started)
        for floor in FLOORS:
            stacks[floor] = BareStack(args, log, floor)
        # Workload by workload, the modes (and the bare floor) back to back, order rotating: ratios
        # come from runs seconds apart, so the noise of a shared machine hits them all alike.
        for r in range(args.rounds):
            load["rounds"].append(os.getloadavg()[0])
            rounds.append({mode: {} for mode in (*modes, *FLOORS)})
            for k, name in enumerate(w for w in (*ENDPOINTS, "floor", *MIXES) if w in args.workloads.split(",")):
                runs = modes if name in MIXES else [*modes, *FLOORS]
                shift = (r + k) % len(runs)
                for mode in runs[shift:] + runs[:shift]:
                    rounds[-1][mode][name] = run_workload(stacks[mode], name, args, users_file, len(tokens))
                print(f"round {r + 1}/{args.rounds} {name:13s} " + ", ".join(
                    f"{m} {rounds[-1][m][name]['rps']:.0f}" for m in runs) + " req/s", flush=True)
        if "ours" in stacks and args.inproc_rounds:
            inproc = inproc_compare(stacks["ours"], args, tokens)
            _add_baseline(inproc, args.baseline)
    finally:
        for stack in stacks.values():
            stack.close()
        shutil.rmtree(work, ignore_errors=True)
        from django.db import connections

        connections.close_all()
        for stack in stacks.values():
            if isinstance(stack, Stack):
                data.drop_database(stack.database)
        if not args.keep_database:
            data.drop_database(args.database)
    if set(rounds[0]) != {*MODES, *FLOORS} or any(set(rounds[0][mode]) != {*ENDPOINTS, "floor", *MIXES} for mode in MODES):
        print(json.dumps(rounds, indent=1))
        return 0
    med, derived = summarise(rounds)
    errors = sum(run["errors"] for rnd in rounds for mode in rnd.values() for run in mode.values())
    # Each round's bare floor: the median of its runs beside every endpoint of the round.
    bare_rps = [statistics.median(run["rps"] for run in r[BARE].values()) for r in rounds]
    load["bare_rounds"] = [round(x, 1) for x in bare_rps]
    load["bare_spread"] = max(bare_rps) / min(bare_rps) - 1
    load["noisy"] = "; ".join(x for x in (
        f"load average {load['before']:.1f} on {os.cpu_count()} cores before the run (other work on the machine)"
        if load["before"] > NOISY_LOAD * (os.cpu_count() or 1) else "",
        f"the bare floor varied {load['bare_spread']:.0%} between rounds" if load["bare_spread"] > NOISY_SPREAD else "",
        f"the in-process bare floor varied {inproc['bare_spread']:.0%} between rounds"
        if inproc and inproc.get("bare_spread", 0) > NOISY_SPREAD else "",
    ) if x)
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": common.machine(),
        "postgres": "?",
        "config": {"quick": args.quick, "rounds": args.rounds, "workers": args.workers,
                   "connections": args.connections, "seconds": args.seconds, "mix_seconds": args.mix_seconds, "mix_warm": args.mix_warm,
                   "cache_warm_seconds": stacks["ours"].warm_seconds if "ours" in stacks else [],
                   "population": args.population, "zipf_s": ZIPF_S, "load_tool": "wrk", "data": counts},
        "load": load,
        "median": med,
        "derived": derived,
        "inproc": inproc,
        "errors": errors,
        "rounds": rounds,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    try:
        result["postgres"] = common.postgres_version(data.ADMIN_DSN)
    except Exception:  # only a label in the report
        pass
    ROUNDS[:] = rounds
    result["targets"] = check_targets(med, derived, inproc)
    table = markdown(result)
    name = "quick" if args.quick else "latest"
    (common.RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (common.RESULTS / f"{name}.md").write_text(table)
    chart(result, common.RESULTS / f"{name}.png")
    if not args.quick and not args.no_readme:
        update_readme(result, table)
    print(table)
    print(f"wrote bench/results/{name}.json, .md, .png in {result['elapsed_s']} s")
    if errors:
        print(f"FAIL: {errors} non-2xx responses or socket errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
