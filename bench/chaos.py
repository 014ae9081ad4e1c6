"""make chaos: steady mixed load while Redis is killed, restarted from its AOF and frozen.

Timeline (seconds; --quick compresses it by 0.3):
  0 steady - 10 SIGKILL Redis - 20 restart it from its AOF - 30 SIGSTOP it - 40 SIGCONT -
  45 writers stop - 55 readers stop - quiescence: every object read through the API compared with
  the database.

Load: Python threads, because every request is recorded on its own (start, latency, status):
readers draw users from a Zipf over a small population, writers post chat messages, generate
images and rename users for the hottest of them, and an admin thread in this process edits
characters and the generation settings through the services, so the objects readers see keep
changing, shared ones included.
Reports 5xx, client timeouts, p50/p99 per phase, hit-ratio recovery time from /metrics, stale reads.

    python bench/chaos.py [--quick] [--workers N] [--cluster]

--cluster runs the same timeline on a Redis Cluster (3 primaries + 3 replicas, REDIS_CLUSTER_NODES):
one primary is SIGKILLed (its replica takes over), restarted (it rejoins as a replica), then another
primary is frozen and resumed.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from bench import common, data  # noqa: E402

SCALE = data.Scale(users=400, characters=12, messages_per_session=16, ledger_per_user=3)
# Like the compose file's Redis: AOF on (fsync every second), RDB snapshots, 256 MB LRU.
REDIS_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "900 1 300 10 60 10000",
              "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru")
READS = ("subscription", "stats", "coins", "chat_history", "me", "characters", "character", "settings")
PER_USER_READS = ("subscription", "stats", "coins", "chat_history", "me")
CLIENT_TIMEOUT = 5.0


class ClusterTarget:
    """The events of the timeline on a cluster: each hits one primary (like RedisServer's API)."""

    def __init__(self) -> None:
        from core.testing import RedisClusterProcesses

        self.cluster = RedisClusterProcesses(*REDIS_ARGS).start()
        self.url = f"redis://{self.cluster.nodes[0]}/0"  # scheme and credentials only
        self.victim = self.frozen = None

    def stop(self) -> None:
        self.victim = self.cluster.primaries()[0]
        self.victim.stop()

    def start(self) -> None:
        self.victim.start()  # same port and directory: its nodes.conf makes it rejoin

    def client(self):
        return self.victim.client()

    def pause(self) -> None:
        self.frozen = next(p for p in self.cluster.primaries() if p is not self.victim)
        self.frozen.pause()

    def resume(self) -> None:
        self.frozen.resume()

    def close(self) -> None:
        self.cluster.close()


class Timeline:
    def __init__(self, factor: float) -> None:
        f = factor
        self.kill, self.restart, self.pause, self.resume = 10 * f, 20 * f, 30 * f, 40 * f
        self.writers_stop, self.readers_stop = 45 * f, 55 * f

    def phases(self) -> list[tuple[str, float, float]]:
        return [("steady", 0, self.kill), ("redis killed", self.kill, self.restart),
                ("restarted from AOF", self.restart, self.pause), ("redis frozen (SIGSTOP)", self.pause, self.resume),
                ("resumed", self.resume, self.writers_stop), ("readers only", self.writers_stop, self.readers_stop)]


class Client:
    def __init__(self, port: int, tokens: list[str]) -> None:
        self.port = port
        self.tokens = tokens

    def call(self, user: int, method: str, path: str, body: dict | None = None) -> tuple[object, bytes]:
        """(status or 'timeout'/'error', body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
        headers = {"Authorization": f"Bearer {self.tokens[user - 1]}"}
        payload = None
        if body is not None:
            payload = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except TimeoutError:
            return "timeout", b""
        except (OSError, http.client.HTTPException):
            return "error", b""
        finally:
            conn.close()


def read_path(name: str, user: int, rng: random.Random) -> str:
    char = data.user_character(user, SCALE)
    return {
        "subscription": "/api/subscription",
        "stats": "/api/subscription/stats",
        "coins": "/api/me/coins",
        "chat_history": f"/api/chat/{char}/sessions/main/messages",
        "me": "/api/me",
        "characters": "/api/characters",
        "character": f"/api/characters/{rng.choice(data.character_names(SCALE))}",
        "settings": "/api/generation/settings",
    }[name]


class Load:
    def __init__(self, client: Client, population: int, writer_users: int, t0: float) -> None:
        self.client = client
        self.population = population
        self.writer_users = writer_users
        self.t0 = t0
        self.records: list[tuple] = []  # (start, latency, kind, name, status)
        self.lock = threading.Lock()
        self.stop_writers = threading.Event()
        self.stop_readers = threading.Event()
        weights = [1 / (i ** 1.1) for i in range(1, population + 1)]
        total = sum(weights)
        acc, self.cdf = 0.0, []
        for w in weights:
            acc += w / total
            self.cdf.append(acc)

    def zipf(self, rng: random.Random) -> int:
        return min(bisect.bisect_left(self.cdf, rng.random()) + 1, self.population)

    def record(self, started: float, kind: str, name: str, status) -> None:
        with self.lock:
            self.records.append((started - self.t0, time.monotonic() - started, kind, name, status))

    def reader(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop_readers.is_set():
            user, name = self.zipf(rng), rng.choice(READS)
            started = time.monotonic()
            status, _ = self.client.call(user, "GET", read_path(name, user, rng))
            self.record(started, "read", name, status)

    def writer(self, seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not self.stop_writers.is_set():
            user = rng.randint(1, self.writer_users)
            n += 1
            kind = rng.choice(("chat_post", "chat_post", "generation", "rename"))
            started = time.monotonic()
            if kind == "chat_post":
                char = data.user_character(user, SCALE)
                status, _ = self.client.call(user, "POST", f"/api/chat/{char}/sessions/main/messages",
                                             {"content": f"chaos message {seed}-{n}"})
            elif kind == "generation":
                status, _ = self.client.call(user, "POST", "/api/generations", {"prompt": f"chaos {seed}-{n}"})
            else:
                status, _ = self.client.call(user, "PATCH", "/api/me", {"display_name": f"Renamed {seed}-{n}"})
            self.record(started, "write", kind, status)
            time.sleep(0.01)


def admin_writer(load: Load, seed: int) -> None:
    """Edits shared objects (a character, the generation settings) through the services, in this
    process with the cache layer on: their keys live longest (30-60 min), so a delete lost in an
    outage would be the worst kind of stale."""
    from django.db import connection

    from characters.models import Character
    from characters.services import character_save
    from generation.services import generation_settings_update

    rng = random.Random(seed)
    names = data.character_names(SCALE)
    n = 0
    while not load.stop_writers.is_set():
        n += 1
        started = time.monotonic()
        kind = "character_edit" if n % 2 else "settings_edit"
        try:
            if kind == "character_edit":
                character = Character.objects.get(name=rng.choice(names))
                character.description = f"Edited during chaos, edit {n}."
                character_save(character=character)
            else:
                generation_settings_update(steps=10 + n % 50)
            status = 200
        except Exception as exc:  # recorded, the run goes on
            status = f"error: {type(exc).__name__}"
        load.record(started, "admin", kind, status)
        time.sleep(0.2)
    connection.close()


def scrape_loop(app: common.App, t0: float, stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        try:
            m = app.metrics()
            out.append((time.monotonic() - t0,
                        common.metric_sum(m, "cache_requests_total", result="hit"),
                        common.metric_sum(m, "cache_requests_total")))
        except Exception:  # a scrape can fail while workers are busy; the next one counts
            pass
        stop.wait(0.5)


def hit_ratio_series(samples: list) -> list[tuple[float, float | None]]:
    series = []
    for (_t0, h0, n0), (t1, h1, n1) in zip(samples, samples[1:], strict=False):
        series.append((t1, (h1 - h0) / (n1 - n0) if n1 > n0 else None))
    return series


def recovery_time(series, since: float, until: float, baseline: float) -> float | None:
    """Seconds from `since` until the per-interval hit ratio is back to 90% of the baseline."""
    for t, ratio in series:
        if since < t <= until and ratio is not None and ratio >= 0.9 * baseline:
            return round(t - since, 2)
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def expected(name: str, user: int, path: str) -> object:
    """What the database says the API must return (the cache layer's own loaders, uncached)."""
    from accounts import cache as accounts
    from accounts import selectors as account_reads
    from characters import cache as characters
    from chat import cache as chat
    from generation import cache as generation
    from subscriptions import cache as subscriptions

    if name == "subscription":
        return subscriptions.subscription_payload(user_id=user)
    if name == "stats":
        return subscriptions.subscription_stats_payload(user_id=user)
    if name == "coins":
        return accounts.coins_payload(user_id=user)
    if name == "chat_history":
        return chat.chat_history_payload(user_id=user, character=data.user_character(user, SCALE), session="main")
    if name == "me":
        return account_reads.user_payload_by_id(user_id=user)
    if name == "characters":
        return characters.character_list_payload()
    if name == "character":
        return characters.character_payload(name=path.rsplit("/", 1)[1])
    if name == "settings":
        return generation.generation_settings_payload()
    raise ValueError(name)


def stale_check(client: Client, users: list[int], repeats: int) -> dict:
    """Every per-user object of these users plus every shared object, read `repeats` times (so both
    workers answer) and compared with the database."""
    from django.db import connection

    rng = random.Random(1)
    targets = [(name, u, read_path(name, u, rng)) for u in users for name in PER_USER_READS]
    targets += [("characters", 1, "/api/characters"), ("settings", 1, "/api/generation/settings")]
    targets += [("character", 1, f"/api/characters/{c}") for c in data.character_names(SCALE)]
    stale, failed, checked = [], 0, 0
    for name, user, path in targets:
        want = expected(name, user, path)
        for _ in range(repeats):
            status, body = client.call(user, "GET", path)
            checked += 1
            if status != 200:
                failed += 1
                continue
            got = orjson.loads(body)
            if got != want:
                stale.append({"object": name, "user": user, "path": path, "api": got, "database": want})
    connection.close()
    return {"objects": len(targets), "reads": checked, "failed_reads": failed, "stale": len(stale),
            "examples": stale[:5]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="timeline compressed to 30%% (CI)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--database", default="bench_chaos")
    parser.add_argument("--cluster", action="store_true", help="a Redis Cluster instead of one Redis")
    args = parser.parse_args()
    from core.testing import RedisServer

    timeline = Timeline(0.3 if args.quick else 1.0)
    population, writer_users = (60, 15) if args.quick else (200, 40)
    database_url = data.database_url(args.database)
    data.recreate_database(args.database)
    if args.cluster:
        redis = ClusterTarget()
        os.environ["REDIS_CLUSTER_NODES"] = ",".join(redis.cluster.nodes)  # this process and gunicorn
    else:
        redis = RedisServer(*REDIS_ARGS).start()
    # This process edits shared objects with the cache layer on, against the same Redis.
    common.setup_django(database_url, redis_url=redis.url, mode="ours")
    common.migrate()
    data.load(database_url, SCALE)
    tokens = common.mint_tokens(SCALE.users)
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    log = common.RESULTS / "gunicorn-chaos.log"
    log.write_bytes(b"")
    app = common.App(mode="ours", database_url=database_url, redis_url=redis.url, workers=args.workers, log=log)
    events = []
    try:
        app.wait_ready(tokens[0])
        client = Client(app.port, tokens)
        t0 = time.monotonic()
        load = Load(client, population, writer_users, t0)
        samples: list = []
        stop_scrape = threading.Event()
        threads = [threading.Thread(target=load.reader, args=(i,)) for i in range(args.readers)]
        threads += [threading.Thread(target=load.writer, args=(100 + i,)) for i in range(args.writers)]
        threads.append(threading.Thread(target=admin_writer, args=(load, 200)))
        threads.append(threading.Thread(target=scrape_loop, args=(app, t0, stop_scrape, samples)))
        for t in threads:
            t.start()

        def at(when: float) -> None:
            time.sleep(max(0.0, t0 + when - time.monotonic()))

        def event(name: str) -> None:
            events.append((round(time.monotonic() - t0, 2), name))
            print(f"{events[-1][0]:6.1f} s  {name}", flush=True)

        at(timeline.kill)
        redis.stop()  # SIGKILL, by the PID this script started
        event("redis SIGKILL")
        at(timeline.restart)
        redis.start()  # same port and directory: replays the AOF
        event(f"redis restarted from AOF ({redis.client().dbsize()} keys back)")
        at(timeline.pause)
        redis.pause()
        event("redis SIGSTOP")
        at(timeline.resume)
        redis.resume()
        event("redis SIGCONT")
        at(timeline.writers_stop)
        load.stop_writers.set()
        event("writers stopped")
        at(timeline.readers_stop)
        load.stop_readers.set()
        for t in threads[:-1]:
            t.join()
        stop_scrape.set()
        threads[-1].join()
        event("readers stopped")
        time.sleep(1.5)  # quiescence: past the breaker cooldown
        read_users = sorted({u for u in range(1, population + 1)})
        stale = stale_check(client, read_users, repeats=3)
        event(f"stale check: {stale['stale']} stale of {stale['reads']} reads")
    finally:
        app.stop()
        redis.close()
        from django.db import connections

        connections.close_all()
        data.drop_database(args.database)

    records = load.records
    phases = []
    for name, start, end in timeline.phases():
        rows = [r for r in records if start <= r[0] < end]
        lat = [r[1] * 1000 for r in rows if isinstance(r[4], int) and r[2] != "admin"]  # HTTP requests only
        phases.append({
            "phase": name, "from_s": start, "to_s": end, "requests": sum(1 for r in rows if r[2] != "admin"),
            "reads": sum(1 for r in rows if r[2] == "read"), "writes": sum(1 for r in rows if r[2] != "read"),
            "5xx": sum(1 for r in rows if isinstance(r[4], int) and r[4] >= 500),
            "4xx": sum(1 for r in rows if isinstance(r[4], int) and 400 <= r[4] < 500),
            "timeouts": sum(1 for r in rows if r[4] == "timeout"),
            "errors": sum(1 for r in rows if isinstance(r[4], str) and r[4].startswith("error")),
            "p50_ms": round(percentile(lat, 0.5), 1) if lat else None,
            "p99_ms": round(percentile(lat, 0.99), 1) if lat else None,
            "max_ms": round(max(lat), 1) if lat else None,
        })
    series = hit_ratio_series(samples)
    steady = [r for t, r in series if t <= timeline.kill and r is not None and t > timeline.kill * 0.3]
    baseline = statistics.median(steady) if steady else None
    recovery = {}
    if baseline:
        recovery = {
            "baseline_hit_ratio": round(baseline, 3),
            "after_restart_s": recovery_time(series, timeline.restart, timeline.pause, baseline),
            "after_resume_s": recovery_time(series, timeline.resume, timeline.readers_stop, baseline),
        }
    statuses: dict[str, int] = {}
    for r in records:
        if r[2] != "admin":
            statuses[str(r[4])] = statuses.get(str(r[4]), 0) + 1
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": common.machine(),
        "config": {"cluster": args.cluster, "quick": args.quick, "workers": args.workers, "readers": args.readers, "writers": args.writers,
                   "population": population, "writer_users": writer_users, "redis_args": list(REDIS_ARGS),
                   "client_timeout_s": CLIENT_TIMEOUT, "timeline": vars(timeline)},
        "events": events,
        "requests": sum(1 for r in records if r[2] != "admin"),
        "statuses": statuses,
        "5xx": sum(p["5xx"] for p in phases),
        "timeouts": sum(p["timeouts"] for p in phases),
        "connection_errors": sum(1 for r in records if r[2] != "admin" and r[4] == "error"),
        "admin_edits": sum(1 for r in records if r[2] == "admin"),
        "admin_errors": sum(1 for r in records if r[2] == "admin" and r[4] != 200),
        "phases": phases,
        "hit_ratio_recovery": recovery,
        "hit_ratio_series": [(round(t, 2), None if r is None else round(r, 3)) for t, r in series],
        "stale_check": stale,
    }
    report = chaos_markdown(result)
    name = ("chaos-quick" if args.quick else "chaos") + ("-cluster" if args.cluster else "")
    (common.RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (common.RESULTS / f"{name}.md").write_text(report)
    print(report)
    ok = (result["5xx"] == 0 and stale["stale"] == 0 and result["timeouts"] == 0 and stale["failed_reads"] == 0
          and result["admin_errors"] == 0 and result["connection_errors"] == 0)
    print(("PASS" if ok else "FAIL") + f": wrote bench/results/{name}.json and .md")
    return 0 if ok else 1


def chaos_markdown(result: dict) -> str:
    rec = result["hit_ratio_recovery"]
    st = result["stale_check"]
    m = result["machine"]
    lines = [
        f"Chaos run {result['date']} on {m['cpu']}, {m['cores']} cores"
        f"{' (QUICK: timeline x0.3)' if result['config']['quick'] else ''}: gunicorn"
        f" {result['config']['workers']} sync workers, {result['config']['readers']} reader and"
        f" {result['config']['writers']} writer threads,"
        f" {'a Redis Cluster (3 primaries + 3 replicas)' if result['config'].get('cluster') else 'Redis'}"
        " with AOF (appendfsync everysec).",
        "",
        f"- Requests: {result['requests']}; 5xx: **{result['5xx']}**; client timeouts ({result['config']['client_timeout_s']} s):"
        f" **{result['timeouts']}**; connection errors: {result['connection_errors']}; statuses: {result['statuses']}",
        f"- Admin edits of shared objects (characters, generation settings) in the harness process with the cache"
        f" layer on: {result['admin_edits']}, failed: {result['admin_errors']}",
        f"- Stale reads after quiescence: **{st['stale']}** ({st['objects']} objects, {st['reads']} reads"
        f" compared with the database, {st['failed_reads']} failed)",
        f"- Hit ratio: steady {rec.get('baseline_hit_ratio')}; back to 90% of it {rec.get('after_restart_s')} s after"
        f" the restart from AOF, {rec.get('after_resume_s')} s after SIGCONT",
        "",
        "| phase | from-to s | HTTP requests | reads | writes (API + admin) | 5xx | 4xx | timeouts | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["phases"]:
        lines.append(f"| {p['phase']} | {p['from_s']:.0f}-{p['to_s']:.0f} | {p['requests']} | {p['reads']} | {p['writes']}"
                     f" | {p['5xx']} | {p['4xx']} | {p['timeouts']} | {p['p50_ms']} | {p['p99_ms']} | {p['max_ms']} |")
    lines += ["", "Events: " + "; ".join(f"{t} s {e}" for t, e in result["events"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
