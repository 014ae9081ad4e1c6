"""make chaos: steady mixed load while Redis fails in several ways (--scenario, default redis; make
chaos runs all but the cluster one, make chaos-quick the first, compressed).

Timelines (seconds; --quick compresses them by 0.3):
  redis      0 steady - 10 SIGKILL Redis - 20 restart it from its AOF - 30 SIGSTOP it - 40 SIGCONT
  sentinel   a primary, a replica and 3 sentinels; the app set up by REDIS_SENTINELS alone, with
             CACHE_INVALIDATION_REPLICAS=1: 0 steady - 10 SENTINEL FAILOVER - 32 SIGKILL of the new
             primary (the sentinels fail over back) - 42 it restarts and rejoins as a replica -
             55 the replica frozen (SIGSTOP) - 58 resumed; writers stop at 68, readers at 78
  sentinel-lost  the same Sentinel set-up: 0 steady - 10 the replica frozen and cut off, an admin
             edit whose delete reaches only the primary, the primary SIGKILLed and never restarted,
             the replica resumed (and promoted); writers stop at 30, readers at 36; reports the
             seconds from the promotion until the hit ratio is back to 80% of steady
  two-hosts  two gunicorn "hosts" on one PostgreSQL and one Redis, requests spread over both; host A
             reaches Redis through a proxy: 0 steady - 10 A cut off from Redis - 30 reconnected
then 45 writers stop - 55 readers stop - quiescence: every object read through the API (each host)
compared with the database.

Load: Python threads, because every request is recorded on its own (start, latency, status):
readers draw users from a Zipf over a small population, writers post chat messages, generate
images and rename users for the hottest of them, and an admin thread in this process edits
characters and the generation settings through the services, so the objects readers see keep
changing, shared ones included.
Reports 5xx, client timeouts, p50/p99 per phase, stale reads, the time every app takes to refuse a
token revoked during the run (one every few seconds), and the cache's availability: the hit ratio of
every 0.5 s (cache_requests_total of every app host's /metrics: hit over hit, miss, bypass and
error), its steady value (median before the first fault), the seconds it stayed below half of that
after each event and in all, and the seconds until it was back to 90% of it.

    python bench/chaos.py [--quick] [--workers N] [--scenario redis|sentinel|sentinel-lost|two-hosts|cluster|all]

--cluster (= --scenario cluster) runs the redis timeline on a Redis Cluster (3 primaries + 3 replicas,
REDIS_CLUSTER_NODES): one primary is SIGKILLed (its replica takes over), restarted (it rejoins as a
replica), then another primary is frozen and resumed.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
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
        from tests.support.harness import RedisClusterProcesses

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
    """Named fault events, then writers stop, then readers stop. An event is (at, id, phase that
    starts with it, action, whether to time the hit ratio's recovery after it)."""

    def __init__(self, factor: float, events: list[tuple], ends: tuple[float, float] = (45, 55)) -> None:
        self.factor = factor
        self.events = [(at * factor, *rest) for at, *rest in events]
        self.writers_stop, self.readers_stop = ends[0] * factor, ends[1] * factor

    @property
    def first_fault(self) -> float:
        return self.events[0][0]

    def phases(self) -> list[tuple[str, float, float]]:
        starts = [(0.0, "steady")] + [(at, phase) for at, _id, phase, *_ in self.events] + \
            [(self.writers_stop, "readers only")]
        ends = [at for at, _ in starts[1:]] + [self.readers_stop]
        return [(name, start, end) for (start, name), end in zip(starts, ends, strict=True)]

    def windows(self) -> list[tuple[str, float, float]]:
        """(id, from, until the next event) for every event; the last one until the readers stop."""
        times = [at for at, *_ in self.events] + [self.readers_stop]
        return [(event_id, at, times[i + 1]) for i, (at, event_id, *_rest) in enumerate(self.events)]

    def recoveries(self) -> list[tuple[str, float, float]]:
        """(id, from, until the next event) for the events whose recovery is timed."""
        times = [at for at, *_ in self.events] + [self.readers_stop]
        return [(event_id, at, times[i + 1]) for i, (at, event_id, _p, _a, timed) in enumerate(self.events) if timed]

    def describe(self) -> dict:
        return {"factor": self.factor, "events": [(round(at, 2), event_id) for at, event_id, *_ in self.events],
                "writers_stop": self.writers_stop, "readers_stop": self.readers_stop}


class Client:
    """Requests to one app, or spread at random over several (hosts)."""

    def __init__(self, ports: list[int], tokens: list[str]) -> None:
        self.ports = ports
        self.tokens = tokens

    def call(self, user: int, method: str, path: str, body: dict | None = None, port: int | None = None) -> tuple[object, bytes]:
        """(status or 'timeout'/'error', body)."""
        port = port or random.choice(self.ports)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
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


REFUSE_WITHIN = 2.0  # the revocation bound: every worker on every host refuses a revoked token within 2 s


class Revoker:
    """Revokes one user's token every couple of seconds while the writers run (deactivation and
    deletion through the models in this process with the cache layer on, a new password through
    the first app's API, in turn), for
    users outside the load's population; each token is first accepted by every app, then sent to
    each of them until all have refused it (401) for a second on end. Records the time to refuse
    (from the commit to the first request of the unbroken refusals, the slowest app) and every 200
    to a request sent more than REFUSE_WITHIN after the revocation."""

    KINDS = ("deactivate", "password", "delete")
    PASSWORD = "chaos-old-pass-1"

    def __init__(self, client: Client, users: range, t0: float) -> None:
        self.client, self.users, self.t0 = client, iter(users), t0
        self.results: list[dict] = []

    def revoke(self, kind: str, user_id: int) -> None:
        from accounts.models import User

        user = User.objects.get(pk=user_id)
        if kind == "deactivate":
            user.is_active = False
            user.save()
        elif kind == "password":  # through the API of the first app (host A, the one cut off from Redis)
            status, body = self.client.call(user_id, "POST", "/api/me/password", port=self.client.ports[0],
                                            body={"current_password": self.PASSWORD, "new_password": f"chaos-{user_id}-new-pass"})
            if status != 200:
                raise RuntimeError(f"password change answered {status}: {body[:200]!r}")
        else:
            user.delete()

    def run(self, stop: threading.Event) -> None:
        from django.db import connection

        n = 0
        while not stop.is_set():
            user, kind = next(self.users, None), self.KINDS[n % 3]
            if user is None:
                break
            n += 1
            if kind == "password":  # the bench's users have none; no cached value holds it
                from django.contrib.auth.hashers import make_password

                from accounts.models import User

                User.objects.filter(pk=user).update(password=make_password(self.PASSWORD))
            for port in self.client.ports:  # cached (and accepted) everywhere first
                for _ in range(4):
                    self.client.call(user, "GET", "/api/me", port=port)
            try:
                self.revoke(kind, user)
            except Exception as exc:  # recorded, the run goes on
                self.results.append({"at_s": round(time.monotonic() - self.t0, 2), "kind": kind, "error": repr(exc)})
                continue
            self.results.append(self.probe(user, kind, time.monotonic()))
            stop.wait(1.0)
        connection.close()

    def probe(self, user: int, kind: str, revoked_at: float) -> dict:
        refused_since: dict[int, float] = {}
        late, other = 0, 0
        deadline = revoked_at + 30
        while time.monotonic() < deadline:
            for port in self.client.ports:
                sent = time.monotonic()
                status, _ = self.client.call(user, "GET", "/api/me", port=port)
                if status == 401:
                    refused_since.setdefault(port, sent)
                    continue
                refused_since.pop(port, None)
                if status == 200:
                    late += sent - revoked_at >= REFUSE_WITHIN
                else:
                    other += 1
            now = time.monotonic()
            if len(refused_since) == len(self.client.ports) and all(now - t >= 1.0 for t in refused_since.values()):
                break
            time.sleep(0.02)
        refused = len(refused_since) == len(self.client.ports)
        return {"at_s": round(revoked_at - self.t0, 2), "kind": kind, "user": user,
                "refused_after_s": round(max(t - revoked_at for t in refused_since.values()), 3) if refused else None,
                "accepted_after_2s": late, "other_statuses": other}


def revocation_summary(results: list[dict], phases: list[tuple[str, float, float]]) -> dict:
    times = [r["refused_after_s"] for r in results if r.get("refused_after_s") is not None]
    by_phase = {}
    for name, start, end in phases:
        inside = [r["refused_after_s"] for r in results if start <= r["at_s"] < end and r.get("refused_after_s") is not None]
        if inside:
            by_phase[name] = max(inside)
    return {"revocations": len(results), "never_refused": sum(1 for r in results if r.get("refused_after_s") is None),
            "accepted_after_2s": sum(r.get("accepted_after_2s", 0) for r in results),
            "refused_after_p50_s": percentile(times, 0.5), "refused_after_max_s": max(times) if times else None,
            "max_by_phase_s": by_phase, "each": results}


class RedisScenario:
    """One Redis: SIGKILL, restart from its AOF, SIGSTOP, SIGCONT."""

    description = "one Redis, one gunicorn"
    settle = 0.0
    ends = (45, 55)  # writers stop, readers stop

    def __init__(self, args) -> None:
        from tests.support.harness import RedisServer

        self.redis = RedisServer(*REDIS_ARGS)
        self.apps: list[common.App] = []
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self.redis.start()
        self.redis_url = self.redis.url

    def start_apps(self, *, database_url: str, workers: int, log: Path) -> None:
        self.apps = [common.App(mode="ours", database_url=database_url, redis_url=self.redis_url, workers=workers,
                                log=log, extra_env=self.env)]

    def events(self) -> list[tuple]:
        return [(10, "kill", "redis killed", self.kill, False), (20, "restart", "restarted from AOF", self.restart, True),
                (30, "pause", "redis frozen (SIGSTOP)", self.pause, False), (40, "resume", "resumed", self.resume, True)]

    def kill(self) -> str:
        self.redis.stop()  # SIGKILL, by the PID this script started
        return "redis SIGKILL"

    def restart(self) -> str:
        self.redis.start()  # same port and directory: replays the AOF
        return f"redis restarted from AOF ({self.redis.client().dbsize()} keys back)"

    def pause(self) -> str:
        self.redis.pause()
        return "redis SIGSTOP"

    def resume(self) -> str:
        self.redis.resume()
        return "redis SIGCONT"

    def close(self) -> None:
        for app in self.apps:
            app.stop()
        self.redis.close()


class SentinelScenario(RedisScenario):
    """Redis Sentinel, configured by REDIS_SENTINELS alone: a planned failover, then a SIGKILL of
    the new primary (the sentinels fail back over to the first one), then it rejoins as a replica."""

    description = "Redis Sentinel (1 primary, 1 replica, 3 sentinels), CACHE_INVALIDATION_REPLICAS=1, one gunicorn"
    settle = 3.0
    ends = (68, 78)

    def start(self) -> None:
        from tests.support.harness import SentinelSetup

        self.setup = SentinelSetup(*REDIS_ARGS).start()
        self.env = {"REDIS_SENTINELS": ",".join(self.setup.addresses), "REDIS_SENTINEL_SERVICE": self.setup.service,
                    "CACHE_INVALIDATION_REPLICAS": "1",
                    # The job broker through the same sentinels: REDIS_URL's host means nothing here,
                    # and every enqueue would otherwise wait for a name lookup that fails.
                    "CELERY_BROKER_URL": ";".join(f"sentinel://{a}" for a in self.setup.addresses),
                    "CELERY_BROKER_SENTINEL_MASTER": self.setup.service}
        os.environ.update(self.env)  # this process (the admin writer) too
        self.redis_url = "redis://sentinel-managed/0"  # the host is the sentinels' business

    def events(self) -> list[tuple]:
        # 22 s after the failover: today the cache stays off for 15-18 s after it.
        return [(10, "failover", "SENTINEL FAILOVER", self.failover, True),
                (32, "kill", "new primary SIGKILL", self.kill, True),
                (42, "rejoin", "killed primary back as a replica", self.rejoin, True),
                (55, "replica_stall", "replica frozen (SIGSTOP)", self.stall, False),
                (58, "replica_resume", "replica resumed", self.unstall, True)]

    def failover(self) -> str:
        old = self.setup.primary_port()
        return f"SENTINEL FAILOVER: primary {old} -> {self.setup.failover()}"

    def kill(self) -> str:
        self.killed = self.setup.primary
        self.killed.stop()
        return f"primary {self.killed.port} SIGKILL (the sentinels fail over)"

    def rejoin(self) -> str:
        self.killed.start()
        return f"{self.killed.port} restarted; the sentinels make it a replica"

    def stall(self) -> str:
        self.stalled = self.setup.replica
        self.stalled.pause()
        return f"replica {self.stalled.port} SIGSTOP"

    def unstall(self) -> str:
        self.stalled.resume()
        return f"replica {self.stalled.port} SIGCONT"

    def close(self) -> None:
        for app in self.apps:
            app.stop()
        self.setup.close()


class SentinelLostScenario(SentinelScenario):
    """Redis Sentinel; the primary is killed right after deletes it could not replicate (its
    replica frozen and cut off for a moment) and never comes back: the replica is promoted and
    must serve the cache alone."""

    description = ("Redis Sentinel (1 primary, 1 replica, 3 sentinels), CACHE_INVALIDATION_REPLICAS=1, one gunicorn;"
                   " the primary killed after an unreplicated delete and never restarted")
    ends = (30, 36)
    promoted_at: float | None = None  # time.monotonic() of the promotion

    def events(self) -> list[tuple]:
        return [(10, "lost", "primary killed for good", self.lose, True)]

    def lose(self) -> str:
        from characters.models import Character
        from characters.services import character_save

        primary, replica = self.setup.primary, self.setup.replica
        replica.pause()
        try:
            # Cut the replication link: the deletes from here on stay in the primary's memory.
            primary.client().client_kill_filter(_type="replica")
            character = Character.objects.order_by("name").first()
            character.description = "Edited just before its primary died."
            character_save(character=character)  # its delete reaches the primary alone
            keys = primary.client().dbsize()
            primary.stop()  # SIGKILL, never restarted
        finally:
            replica.resume()
        port = self.setup.wait_new_primary(primary.port)
        self.promoted_at = time.monotonic()
        return f"primary {primary.port} SIGKILL after an unreplicated delete ({keys} keys on it); {port} promoted"


class TcpProxy:
    """A loopback TCP relay that can be cut: while cut, every connection through it is closed and
    new ones are dropped at once, as for a host whose route to Redis is gone."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = False
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            with self.lock:
                sockets, self.sockets = self.sockets, []
            for sock in sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self.set_cut(True)
        self.listener.close()


class TwoHostsScenario(RedisScenario):
    """Two app hosts on one PostgreSQL and one Redis; host A loses its route to Redis for 20 s
    while host B (and this process) keep it. Requests are spread over both hosts."""

    description = "two gunicorn hosts on one PostgreSQL and one Redis; host A cut off from Redis 10-30 s"
    settle = 1.0

    def start(self) -> None:
        super().start()
        self.proxy = TcpProxy(self.redis.port)

    def start_apps(self, *, database_url: str, workers: int, log: Path) -> None:
        self.apps = [common.App(mode="ours", database_url=database_url, redis_url=f"redis://127.0.0.1:{self.proxy.port}/0",
                                workers=workers, log=log),
                     common.App(mode="ours", database_url=database_url, redis_url=self.redis_url, workers=workers,
                                log=log)]

    def events(self) -> list[tuple]:
        return [(10, "cut", "host A cut off from Redis", self.cut, False),
                (30, "reconnect", "host A reconnected", self.reconnect, True)]

    def cut(self) -> str:
        self.proxy.set_cut(True)
        return "host A cut off from Redis"

    def reconnect(self) -> str:
        self.proxy.set_cut(False)
        return "host A reaches Redis again"

    def close(self) -> None:
        super().close()
        self.proxy.close()


class ClusterScenario(RedisScenario):
    """The redis timeline on a Redis Cluster: one primary killed and restarted, another frozen."""

    description = "a Redis Cluster (3 primaries + 3 replicas), CACHE_INVALIDATION_REPLICAS=1, one gunicorn"

    def __init__(self, args) -> None:
        self.apps, self.env = [], {}

    def start(self) -> None:
        from tests.support.harness import RedisServer

        self.redis = ClusterTarget()
        # The job queue on a Redis of its own, as a cluster needs (kombu talks to one server).
        self.broker = RedisServer().start()
        self.env = {"REDIS_CLUSTER_NODES": ",".join(self.redis.cluster.nodes), "CACHE_INVALIDATION_REPLICAS": "1",
                    "CELERY_BROKER_URL": self.broker.url}
        os.environ.update(self.env)  # this process and gunicorn
        self.redis_url = self.redis.url

    def close(self) -> None:
        super().close()
        self.broker.close()


SCENARIOS = {"redis": RedisScenario, "sentinel": SentinelScenario, "sentinel-lost": SentinelLostScenario,
             "two-hosts": TwoHostsScenario, "cluster": ClusterScenario}
ALL = ("redis", "sentinel", "sentinel-lost", "two-hosts")  # make chaos; the cluster has make chaos-cluster


SCRAPE_EVERY = 0.5  # seconds between two scrapes of every app's /metrics: the hit ratio's resolution


def scrape_loop(apps: list[common.App], t0: float, stop: threading.Event, out: list) -> None:
    """Every SCRAPE_EVERY s on a fixed grid (a slow scrape does not shift the next ones): the cached
    reads of every app host (hits, all) and the pending keys (cache_pending_keys, the largest)."""
    tick = time.monotonic()
    while not stop.is_set():
        try:
            ms = [app.metrics() for app in apps]
            out.append((time.monotonic() - t0,
                        sum(common.metric_sum(m, "cache_requests_total", result="hit") for m in ms),
                        sum(common.metric_sum(m, "cache_requests_total") for m in ms),
                        max(common.metric_sum(m, "cache_pending_keys") for m in ms)))
        except Exception:  # a scrape can fail while workers are busy; the next one counts
            pass
        tick += SCRAPE_EVERY
        while tick < time.monotonic():  # more than one interval late: skip to the next grid point
            tick += SCRAPE_EVERY
        stop.wait(tick - time.monotonic())


def hit_ratio_intervals(samples: list) -> list[tuple[float, float, float | None]]:
    """(from, to, hit ratio of the cached reads that completed in between; None if none did)."""
    return [(t0, t1, (h1 - h0) / (n1 - n0) if n1 > n0 else None)
            for (t0, h0, n0, *_), (t1, h1, n1, *_) in zip(samples, samples[1:], strict=False)]


def hit_ratio_series(samples: list) -> list[tuple[float, float | None]]:
    return [(t1, ratio) for _t0, t1, ratio in hit_ratio_intervals(samples)]


def still_below_half(intervals, until: float, baseline: float) -> bool:
    """Was the hit ratio still below half the steady one in the last interval before ``until``?
    (Then the time below half after an event is cut short by the next one: a lower bound.)"""
    before = [ratio for start, end, ratio in intervals if end <= until]
    return bool(before) and (before[-1] is None or before[-1] < 0.5 * baseline)


def seconds_below_half(intervals, since: float, until: float, baseline: float) -> float:
    """Seconds of (since, until] in intervals whose hit ratio was below half the steady one. An
    interval in which no cached read completed counts as below: nothing was served from the cache."""
    below = 0.0
    for start, end, ratio in intervals:
        overlap = min(end, until) - max(start, since)
        if overlap > 0 and (ratio is None or ratio < 0.5 * baseline):
            below += overlap
    return round(below, 2)


def back_to(intervals, since: float, until: float, level: float) -> float | None:
    """Seconds from `since` to the end of the first interval that began after it and whose hit
    ratio reached `level`."""
    for start, end, ratio in intervals:
        if since <= start and end <= until and ratio is not None and ratio >= level:
            return round(end - since, 2)
    return None


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
        for _, port in [(r, p) for r in range(repeats) for p in client.ports]:  # every host, repeatedly
            status, body = client.call(user, "GET", path, port=port)
            checked += 1
            if status != 200:
                failed += 1
                continue
            got = orjson.loads(body)
            if got != want:
                stale.append({"object": name, "user": user, "path": path, "port": port, "api": got,
                              "database": want})
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
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="redis")
    parser.add_argument("--cluster", action="store_true", help="= --scenario cluster")
    args = parser.parse_args()
    if args.cluster:
        args.scenario = "cluster"
    if args.scenario == "all":  # one process each: the scenarios configure Django differently
        codes = [subprocess.call([sys.executable, __file__, *sys.argv[1:], "--scenario", name]) for name in ALL]
        return max(codes)
    scenario = SCENARIOS[args.scenario](args)
    factor = 0.3 if args.quick else 1.0
    population, writer_users = (60, 15) if args.quick else (200, 40)
    database_url = data.database_url(args.database)
    data.recreate_database(args.database)
    events = []
    try:
        # This process edits shared objects with the cache layer on, against the same Redis.
        scenario.start()
        common.setup_django(database_url, redis_url=scenario.redis_url, mode="ours")
        common.migrate()
        data.load(database_url, SCALE)
        tokens = common.mint_tokens(SCALE.users)
        common.RESULTS.mkdir(parents=True, exist_ok=True)
        log = common.RESULTS / f"gunicorn-chaos-{args.scenario}.log"
        log.write_bytes(b"")
        scenario.start_apps(database_url=database_url, workers=args.workers, log=log)
        timeline = Timeline(factor, scenario.events(), scenario.ends)
        for app in scenario.apps:
            app.wait_ready(tokens[0])
        client = Client([app.port for app in scenario.apps], tokens)
        load_at_start = [round(x, 2) for x in os.getloadavg()]  # before our own load starts
        t0 = time.monotonic()
        load = Load(client, population, writer_users, t0)
        samples: list = []
        stop_scrape = threading.Event()
        threads = [threading.Thread(target=load.reader, args=(i,)) for i in range(args.readers)]
        threads += [threading.Thread(target=load.writer, args=(100 + i,)) for i in range(args.writers)]
        threads.append(threading.Thread(target=admin_writer, args=(load, 200)))
        revoker = Revoker(client, range(population + 1, SCALE.users + 1), t0)  # not read by the load
        threads.append(threading.Thread(target=revoker.run, args=(load.stop_writers,)))
        threads.append(threading.Thread(target=scrape_loop, args=(scenario.apps, t0, stop_scrape, samples)))
        for t in threads:
            t.start()

        def at(when: float) -> None:
            time.sleep(max(0.0, t0 + when - time.monotonic()))

        def event(name: str) -> None:
            events.append((round(time.monotonic() - t0, 2), name))
            print(f"{events[-1][0]:6.1f} s  {name}", flush=True)

        for when, _id, _phase, action, _timed in timeline.events:
            at(when)
            event(action())
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
        time.sleep(1.5 + scenario.settle)  # quiescence: past the breaker cooldown and pending retries
        read_users = sorted({u for u in range(1, population + 1)})
        stale = stale_check(client, read_users, repeats=3)
        event(f"stale check: {stale['stale']} stale of {stale['reads']} reads")
    finally:
        scenario.close()
        from django.db import connections

        from core.cache.watch import watcher

        watcher().stop()  # its database connection, before the database goes

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
    first = timeline.first_fault
    steady = [r for t, r in series if t <= first and r is not None and t > first * 0.3]
    baseline = statistics.median(steady) if steady else None
    recovery: dict = {}
    below_half: dict = {}
    if baseline:
        recovery = {"baseline_hit_ratio": round(baseline, 3)}
        for event_id, since, until in timeline.recoveries():
            recovery[f"after_{event_id}_s"] = recovery_time(series, since, until, baseline)
        intervals = hit_ratio_intervals(samples)
        below_half = {"threshold": round(0.5 * baseline, 3),
                      "total_s": seconds_below_half(intervals, first, timeline.readers_stop, baseline),
                      "by_event_s": {event_id: seconds_below_half(intervals, since, until, baseline)
                                     for event_id, since, until in timeline.windows()},
                      "still_below_at_next_event": [event_id for event_id, _since, until in timeline.windows()
                                                    if still_below_half(intervals, until, baseline)]}
    promoted_at = getattr(scenario, "promoted_at", None)
    after_promotion = {}
    if baseline and promoted_at is not None:
        since = promoted_at - t0
        after_promotion = {"at_s": round(since, 2),
                           "to_80pct_s": back_to(hit_ratio_intervals(samples), since, timeline.readers_stop,
                                                 0.8 * baseline),
                           "below_half_s": seconds_below_half(hit_ratio_intervals(samples), since,
                                                              timeline.readers_stop, baseline)}
    statuses: dict[str, int] = {}
    for r in records:
        if r[2] != "admin":
            statuses[str(r[4])] = statuses.get(str(r[4]), 0) + 1
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": common.machine(),
        "load_average": {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "scenario": args.scenario,
        "setup": scenario.description,
        "config": {"quick": args.quick, "workers": args.workers, "readers": args.readers, "writers": args.writers,
                   "population": population, "writer_users": writer_users, "redis_args": list(REDIS_ARGS),
                   "client_timeout_s": CLIENT_TIMEOUT, "timeline": timeline.describe()},
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
        # Seconds the hit ratio of a 0.5 s interval stayed below half the steady one, after each event
        # (until the next one; the last until the readers stop) and from the first fault on.
        "hit_ratio_below_half": below_half,
        # Seconds from a promotion (sentinel-lost) until the hit ratio of a 0.5 s interval is back
        # to 80% of the steady one.
        "hit_ratio_after_promotion": after_promotion,
        "hit_ratio_series": [(round(t, 2), None if r is None else round(r, 3)) for t, r in series],
        "pending_keys_series": [(round(t, 2), int(p)) for t, _h, _n, p in samples],
        "stale_check": stale,
        "revoked_tokens": revocation_summary(revoker.results, timeline.phases()),
    }
    report = chaos_markdown(result)
    name = ("chaos-quick" if args.quick else "chaos") + ("" if args.scenario == "redis" else f"-{args.scenario}")
    (common.RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (common.RESULTS / f"{name}.md").write_text(report)
    print(report)
    revoked = result["revoked_tokens"]
    ok = (result["5xx"] == 0 and stale["stale"] == 0 and result["timeouts"] == 0 and stale["failed_reads"] == 0
          and result["admin_errors"] == 0 and result["connection_errors"] == 0
          and revoked["accepted_after_2s"] == 0 and revoked["never_refused"] == 0)
    print(("PASS" if ok else "FAIL") + f": wrote bench/results/{name}.json and .md")
    return 0 if ok else 1


def chaos_markdown(result: dict) -> str:
    rec = result["hit_ratio_recovery"]
    below = result.get("hit_ratio_below_half", {})
    st = result["stale_check"]
    rv = result["revoked_tokens"]
    m = result["machine"]
    lines = [
        f"Chaos run {result['date']} on {m['cpu']}, {m['cores']} cores"
        f"{' (QUICK: timeline x0.3)' if result['config']['quick'] else ''}, scenario {result['scenario']}:"
        f" {result['setup']}; {result['config']['workers']} sync workers per gunicorn, {result['config']['readers']}"
        f" reader and {result['config']['writers']} writer threads, Redis with AOF (appendfsync everysec).",
        *([f"Load average (1 min) before the load started {result['load_average']['start'][0]}, at the end"
           f" {result['load_average']['end'][0]} on {m['cores']} cores (the run's own processes add to it)."]
          if "load_average" in result else []),
        "",
        f"- Requests: {result['requests']}; 5xx: **{result['5xx']}**; client timeouts ({result['config']['client_timeout_s']} s):"
        f" **{result['timeouts']}**; connection errors: {result['connection_errors']}; statuses: {result['statuses']}",
        f"- Admin edits of shared objects (characters, generation settings) in the harness process with the cache"
        f" layer on: {result['admin_edits']}, failed: {result['admin_errors']}",
        f"- Stale reads after quiescence: **{st['stale']}** ({st['objects']} objects, {st['reads']} reads"
        f" compared with the database, {st['failed_reads']} failed)",
        f"- Hit ratio: steady {rec.get('baseline_hit_ratio')}; seconds until back to 90% of it: "
        + ", ".join(f"{k[len('after_'):-len('_s')]} {v}" for k, v in rec.items() if k.startswith("after_")),
        f"- Hit ratio below half of steady (< {below.get('threshold')}, per 0.5 s): **{below.get('total_s')} s** in all"
        " after the first fault; after each event (until the next): "
        + ", ".join(f"{k} {'>= ' if k in below.get('still_below_at_next_event', ()) else ''}{v} s"
                    for k, v in below.get("by_event_s", {}).items())
        + " (>=: still below when the next event came)",
        *([f"- After the promotion ({result['hit_ratio_after_promotion']['at_s']} s): back to 80% of the steady hit"
           f" ratio after **{result['hit_ratio_after_promotion']['to_80pct_s']} s**; below half of it"
           f" {result['hit_ratio_after_promotion']['below_half_s']} s in all"]
          if result.get("hit_ratio_after_promotion") else []),
        f"- Revoked tokens (deactivation, new password, deletion in turn): {rv['revocations']}; refused by every"
        f" app after p50 {rv['refused_after_p50_s']} s, max **{rv['refused_after_max_s']} s** (bound {REFUSE_WITHIN} s);"
        f" accepted later than {REFUSE_WITHIN} s: **{rv['accepted_after_2s']}**; never refused: {rv['never_refused']};"
        f" slowest per phase: {rv['max_by_phase_s']}",
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
