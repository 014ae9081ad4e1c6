"""Test support: a private redis-server per test process, which tests may stop, pause, restart
with its AOF or squeeze in memory without touching anyone else's Redis."""

from __future__ import annotations

import copy
import http.client
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_cluster_port() -> int:
    """A free port for a cluster node: its bus port (+10000) must be free too, and below 65536."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


class RedisServer:
    """A redis-server process this test run started, so it may kill it (by its own PID)."""

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="test-redis-")
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "redis.log",
                *self.extra_args]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log()}")
            try:
                if self.client().ping():
                    # While it loads an AOF the server answers LOADING; wait for that to end.
                    if self.client().info("persistence").get("loading", 0) == 0:
                        return
            except redis.RedisError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on {self.port} did not start: {self.log()}")

    def log(self) -> str:
        path = os.path.join(self.dir, "redis.log")
        return open(path).read()[-2000:] if os.path.exists(path) else ""

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, **kwargs)

    def stop(self) -> None:
        """Kill it at once (SIGKILL): no shutdown save, like a crash."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def wipe(self) -> None:
        """Delete every key of this private server, SCAN + UNLINK in batches."""
        for db in range(16):
            client = self.client(db=db)
            batch = []
            for key in client.scan_iter(count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
            client.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisSentinel(RedisServer):
    """``redis-server sentinel.conf --sentinel`` watching one primary, on a free port."""

    def __init__(self, primary_port: int, service: str = "mymaster", *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 4000) -> None:
        super().__init__()
        self.config = "\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}", "logfile sentinel.log",
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
            f"sentinel parallel-syncs {service} 1", "",
        ])

    def start(self) -> RedisSentinel:
        path = os.path.join(self.dir, "sentinel.conf")
        if not os.path.exists(path):  # a restart keeps what the sentinel learnt
            with open(path, "w") as conf:
                conf.write(self.config)
        self.process = subprocess.Popen([shutil.which("redis-server"), path, "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def log(self) -> str:
        path = os.path.join(self.dir, "sentinel.log")
        return open(path).read()[-2000:] if os.path.exists(path) else ""


class SentinelSetup:
    """A primary, a replica and three sentinels on loopback: what ``REDIS_SENTINELS`` points at."""

    service = "mymaster"

    def __init__(self, *primary_args: str) -> None:
        self.primary_args = primary_args
        self.servers: dict[int, RedisServer] = {}
        self.sentinels: list[RedisSentinel] = []

    def start(self) -> SentinelSetup:
        primary = RedisServer(*self.primary_args).start()
        replica = RedisServer(*self.primary_args, "--replicaof", "127.0.0.1", str(primary.port)).start()
        self.servers = {primary.port: primary, replica.port: replica}
        self.wait_replicated(replica)
        self.sentinels = [RedisSentinel(primary.port, self.service).start() for _ in range(3)]
        self.wait_for(lambda: all(len(s.client().sentinel_slaves(self.service)) == 1
                                  and len(s.client().sentinel_sentinels(self.service)) == 2 for s in self.sentinels),
                      "the sentinels never found each other and the replica")
        return self

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def primary_port(self) -> int:
        return int(self.sentinels[0].client().sentinel_get_master_addr_by_name(self.service)[1])

    @property
    def primary(self) -> RedisServer:
        return self.servers[self.primary_port()]

    @property
    def replica(self) -> RedisServer:
        return next(server for port, server in self.servers.items() if port != self.primary_port())

    def wait_for(self, condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}; logs: {[s.log() for s in self.sentinels][:1]}")
            time.sleep(0.05)

    def wait_replicated(self, replica: RedisServer) -> None:
        self.wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up",
                      "the replica never caught up with its primary")

    def wait_new_primary(self, old_port: int) -> int:
        """Every sentinel names a primary other than ``old_port``, and that server says so."""
        def moved() -> bool:
            ports = {int(s.client().sentinel_get_master_addr_by_name(self.service)[1]) for s in self.sentinels}
            return len(ports) == 1 and old_port not in ports and \
                self.servers[ports.pop()].client().info("replication")["role"] == "master"
        self.wait_for(moved, "no failover happened")
        return self.primary_port()

    def start_failover(self) -> int:
        """SENTINEL FAILOVER (planned), without waiting for it; returns the old primary's port."""
        old = self.primary_port()
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", self.service)
        return old

    def failover(self) -> int:
        """SENTINEL FAILOVER (planned); returns the new primary's port."""
        return self.wait_new_primary(self.start_failover())

    def close(self) -> None:
        for server in [*self.sentinels, *self.servers.values()]:
            server.close()


def run_concurrently(count: int, work) -> list:
    """Run work(i) in `count` threads released together; each thread closes its DB connection."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except Exception as exc:  # returned: the caller asserts on it
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


class RedisClusterProcesses:
    """A Redis Cluster on loopback that this test run started: ``primaries`` primaries with
    ``replicas`` replicas each (``redis-server --cluster-enabled yes``, ``redis-cli --cluster
    create``). A short node timeout makes a killed primary's replica take over in a second or two;
    ``cluster-require-full-coverage no`` keeps the other slots served meanwhile (what a cache wants)."""

    def __init__(self, *extra_args: str, primaries: int = 3, replicas: int = 1) -> None:
        self.replicas = replicas
        self.servers = [
            RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no",
                        # A replica may take over however long its link was down; sync at once.
                        "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
                        *extra_args, port=free_cluster_port())
            for _ in range(primaries * (1 + replicas))
        ]

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{server.port}" for server in self.servers]

    def start(self) -> RedisClusterProcesses:
        for server in self.servers:
            server.start()
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RuntimeError("redis-cli is not installed (Debian package redis-tools)")
        subprocess.run([binary, "--cluster", "create", *self.nodes, "--cluster-replicas", str(self.replicas),
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_ok()
        self.wait_replicas_synced()
        return self

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = [server.client().info("replication") for server in self.alive()]
            replicas = [r for r in roles if r["role"] == "slave"]
            if len(replicas) == len(self.alive()) - len(self.primaries()) and all(
                    r.get("master_link_status") == "up" for r in replicas):
                return
            time.sleep(0.1)
        raise RuntimeError("the replicas did not sync")

    def alive(self) -> list[RedisServer]:
        return [server for server in self.servers if server.process is not None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and sees live primaries serving all slots."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                infos = [server.client().cluster("info") for server in self.alive()]
                served = {self._served_slots(server) for server in self.alive()}
                if all(i["cluster_state"] == "ok" for i in infos) and served == {16384}:
                    return
            except (redis.RedisError, KeyError):
                pass
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become ok")

    def _served_slots(self, via: RedisServer) -> int:
        """Slots that live primaries serve, as ``via`` sees it."""
        live = {server.port for server in self.alive()}
        total = 0
        for line in via.client().execute_command("CLUSTER", "NODES").decode().splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rpartition(":")[2])
            if "master" in fields[2] and "fail" not in fields[2] and port in live:
                for part in fields[8:]:
                    if not part.startswith("["):
                        low, _, high = part.partition("-")
                        total += int(high or low) - int(low) + 1
        return total

    def primaries(self, via: RedisServer | None = None) -> list[RedisServer]:
        """The live servers that are primaries with slots, as ``via`` (or any live node) sees it."""
        via = via or self.alive()[0]
        by_port = {server.port: server for server in self.alive()}
        out = []
        for line in via.client().execute_command("CLUSTER", "NODES").decode().splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rpartition(":")[2])
            if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8 and port in by_port:
                out.append(by_port[port])
        return out

    def primary_for(self, key: str) -> RedisServer:
        """The live primary that serves this key's slot."""
        slot = self.alive()[0].client().cluster("keyslot", key)
        for server in self.primaries():
            for entry in server.client().cluster("slots"):
                if entry[0] <= slot <= entry[1] and entry[2][1] == server.port:
                    return server
        raise AssertionError(f"no live primary serves slot {slot}")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """A live replica of ``primary`` whose replication link is up."""
        for server in self.alive():
            info = server.client().info("replication")
            if info["role"] == "slave" and info.get("master_port") == primary.port \
                    and info.get("master_link_status") == "up":
                return server
        raise AssertionError(f"{primary.port} has no replica in sync")

    def revive(self) -> None:
        """Restart every node that was stopped (same port and directory: its nodes.conf makes it
        rejoin, as a replica if its slots were taken over) and wait until all are in sync."""
        for server in self.servers:
            if server.process is None:
                server.start()
        self.wait_ok()
        self.wait_replicas_synced()

    def wipe(self) -> None:
        """Delete every key, SCAN + UNLINK one key per command (keys of one node span slots)."""
        for server in self.primaries():
            client = server.client()
            pipe = client.pipeline(transaction=False)
            for key in client.scan_iter(count=1000):
                pipe.unlink(key)
            pipe.execute()
            client.close()

    def keys(self) -> set[str]:
        return {key.decode() for server in self.primaries() for key in server.client().scan_iter(count=1000)}

    def get(self, key: str) -> bytes | None:
        """A key's value as ``redis-cli -c GET`` sees it."""
        cluster = redis.RedisCluster(host="127.0.0.1", port=self.primaries()[0].port, socket_timeout=2)
        try:
            return cluster.get(key)
        finally:
            cluster.close()

    def close(self) -> None:
        for server in self.servers:
            server.close()


class Gunicorn:
    """The project's gunicorn config, 2 sync workers, the test settings on this test database."""

    def __init__(self, database_name: str, redis_url: str, **env: str) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="test-gunicorn-"))
        self.log_file = open(self.dir / "gunicorn.log", "wb")
        environment = {
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database_name}",
            "REDIS_URL": redis_url,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": "2",
            **env,
        }
        self.workers = int(environment["GUNICORN_WORKERS"])
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application",
             "-c", str(Path(settings.BASE_DIR) / "config" / "gunicorn.conf.py")],
            cwd=settings.BASE_DIR, env=environment, stdout=self.log_file, stderr=self.log_file,
        )
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                answer = request("127.0.0.1", self.port, "GET", "/api/health", timeout=5)
                if answer[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        log = self.log()
        self.close()
        raise AssertionError(f"gunicorn did not start on {database_name}: {answer} {log}")

    def log(self) -> str:
        return (self.dir / "gunicorn.log").read_text()[-3000:]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log_file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def request(host, port, method, path, *, body=None, headers=None, timeout=10.0, source=None):
    connection = http.client.HTTPConnection(host, port, timeout=timeout,
                                            source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def loaded_both_ways(family, parts_list: list[dict]) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """A family's values for these parts from its ``bulk_loader`` and from its ``loader`` one key
    at a time, as the JSON bytes a key would hold (so key order counts too); a key whose loader
    raises ObjectDoesNotExist is absent from both."""
    import orjson
    from django.core.exceptions import ObjectDoesNotExist

    bulk = {at: orjson.dumps(data) for at, data in family.bulk_loader(parts_list).items()}
    single = {}
    for at, parts in enumerate(parts_list):
        try:
            single[at] = orjson.dumps(family.load(**parts))
        except ObjectDoesNotExist:
            pass
    return bulk, single


class LoopbackHttpServer:
    """A threaded HTTP server on a free loopback port answering with ``handler`` (a
    BaseHTTPRequestHandler subclass) until close(): a stand-in peer for a test."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()



def until(condition, what: str = "the condition", timeout: float = 30.0, every: float = 0.05):
    """Poll ``condition`` until it returns something truthy (returned), failing with ``what``
    after ``timeout`` seconds: a bound, not a speed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)

@contextmanager
def cache_on_own_redis(settings, *server_args: str):
    """The cache on a redis-server of this test's own (started with ``server_args``), which the
    test may kill, fill or restart; the breaker starts and ends closed and unsynced."""
    from core.cache.health import HEALTH

    server = RedisServer(*server_args).start()
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = server.url
    settings.CACHES = caches  # override_settings resets the cache handlers: a new pool on this URL
    HEALTH.reset()
    try:
        yield server
    finally:
        server.close()
        HEALTH.reset()
