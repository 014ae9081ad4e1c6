"""Redis health for this process: a circuit breaker and the "trusted" state of cached reads.

Two facts decide whether a cached read may be served:

* the breaker is closed: after any Redis failure (refused, timeout, MISCONF on a write) Redis is
  skipped for ``CACHE_BREAKER_COOLDOWN`` seconds, so a stalled server costs one timeout, not one
  per request;
* the process has synced since its last (re)connection: invalidations that could not reach Redis
  were recorded in PostgreSQL (``core.PendingInvalidation``) and must be applied before a value
  read over a fresh connection (a restarted Redis may have replayed old values from its AOF) is
  trusted. The sync is one SQL query, run only on those transitions, never on a warm hit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from redis.connection import Connection, SSLConnection
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from core import metrics

from .client import CACHE_ERRORS, redis_client
from .pending import drain_pending_invalidations
from .replication import unlink_confirmed
from .sentinel import FollowingSentinelPool
from .watch import watcher

logger = logging.getLogger("core.cache")

CLOSED, OPEN = "closed", "open"


class RateLimitedLog:
    """Logs a repeated failure at most once per interval, with a count of what was suppressed."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self.interval:
            suppressed = self._suppressed.pop(kind, 0)
            self._last[kind] = now
            extra = f" ({suppressed} similar suppressed)" if suppressed else ""
            logger.warning("%s%s", message, extra)
        else:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1


class CacheHealth:
    metric_node = ""  # its cache_breaker_open label: a cluster node's health has the node's name
    holds_families = True  # the key families live on its server: failures wake the pending watcher

    def __init__(self) -> None:
        self._sync_lock = threading.Lock()
        self.breaker_gauge = metrics.breaker_open.labels(node=self.metric_node)
        self.reset()

    def reset(self) -> None:
        self.log = RateLimitedLog()
        self.state = CLOSED
        self.open_until = 0.0
        self.connect_epoch = 0
        self.synced_epoch = -1  # a new process has never synced
        self.run_id: str | None = None  # the Redis server instance last connected to
        self.failures = 0
        # Pending invalidations recorded anywhere (any worker, any host) that this process has not
        # applied yet: bumped by the watcher (NOTIFY or its periodic look) and by a local deferral.
        self.pending_generation = 0
        self.applied_generation = 0
        self.breaker_gauge.set(0)

    @property
    def needs_sync(self) -> bool:
        return (self.state is OPEN or self.synced_epoch != self.connect_epoch
                or self.pending_generation != self.applied_generation)

    def blocking(self) -> bool:
        """True while the breaker is open and cooling down: do not even try Redis."""
        return self.state is OPEN and time.monotonic() < self.open_until

    def connected(self, run_id: str | None) -> None:
        """A connection was made. A server we have not synced with (first contact, a restart, which
        may have replayed old values from its AOF, or a new primary after a failover) must be synced
        with before it is trusted; reconnecting to the same server instance does not need that."""
        if run_id is None or run_id != self.run_id:
            self.run_id = run_id
            self.connect_epoch += 1
        if self.holds_families:
            watcher().ensure_running()

    def failure(self, exc: BaseException, operation: str = "redis") -> None:
        if isinstance(exc, redis.exceptions.MaxConnectionsError):
            # This process's pool is full (more threads than REDIS_MAX_CONNECTIONS): the request
            # that met it reads from the database; Redis itself is fine, so the breaker stays shut.
            metrics.cache_errors.labels(operation=operation).inc()
            self.log.warning(f"{operation}:pool", f"cache {operation} found no free connection in this "
                             f"process's pool (REDIS_MAX_CONNECTIONS): {exc}")
            return
        was_open = self.state is OPEN
        self.state = OPEN
        self.open_until = time.monotonic() + settings.CACHE_BREAKER_COOLDOWN
        self.failures += 1
        metrics.cache_errors.labels(operation=operation).inc()
        self.breaker_gauge.set(1)
        self.log.warning(f"{operation}:{type(exc).__name__}", f"cache {operation} failed, Redis skipped: {type(exc).__name__}: {exc}")
        if not was_open:
            logger.info("cache circuit opened%s", f" for {self.metric_node}" if self.metric_node else "")
        if self.holds_families:
            watcher().ensure_running()

    def ready(self) -> bool:
        """May cached reads be trusted right now? Syncs first when needed (rarely)."""
        if not self.needs_sync:
            return True
        if self.blocking():
            return False
        return self.sync()

    def sync(self) -> bool:
        from django.db import DatabaseError, connection

        watcher().ensure_running()  # a process's first sync starts it (and a gunicorn worker's)
        # Inside a transaction a failed sync query would poison it: serve from the database instead.
        if connection.in_atomic_block:
            return False
        # Another thread may be syncing: wait briefly for it rather than skip Redis.
        if not self._sync_lock.acquire(timeout=0.5):
            return False
        if not self.needs_sync:  # it finished while we waited
            self._sync_lock.release()
            return True
        try:
            # Read before draining: whatever is signalled later is applied by the next sync.
            generation = self.pending_generation
            client = self.client()
            client.ping()  # may reconnect, bumping connect_epoch
            epoch = self.connect_epoch
            self.drain(client)
        except (*CACHE_ERRORS, DatabaseError) as exc:
            self.failure(exc, "sync")
            return False
        finally:
            self._sync_lock.release()
        self.synced_epoch = epoch
        self.applied_generation = generation
        if self.state is OPEN:
            logger.info("cache circuit closed")
        self.state = CLOSED
        self.breaker_gauge.set(0)
        return True

    def client(self) -> redis.Redis:
        return redis_client()

    def drain(self, client: redis.Redis) -> int:
        return drain_pending_invalidations(client, unlink=unlink_confirmed)

    def unlink(self, keys: list[str]) -> None:
        """Delete these keys where this health's server holds them (a cluster node: cluster.py)."""
        unlink_confirmed(redis_client(), keys)

    def mark_unsynced(self) -> None:
        """Invalidations were recorded for later: sync before trusting Redis again (the watcher
        also retries them in the background, and tells every other worker)."""
        self.pending_signalled()
        watcher().retry_soon()

    def pending_signalled(self) -> None:
        """Pending invalidations exist somewhere: stop trusting Redis until they are applied."""
        self.pending_generation += 1

    def pending_cleared(self, generation: int) -> None:
        """No pending invalidation was left when the watcher looked, after it read ``generation``:
        whoever drained them applied them to Redis, so this process need not drain again."""
        if self.applied_generation < generation:
            self.applied_generation = generation


class ProcessHealth(CacheHealth):
    """The process's health. In cluster mode it only stands for "the cluster cannot be reached at
    all" (its breaker ends with its cooldown): each node drains its own slots' pending deletes, and
    draining them all here would fail on any one dead node and switch the whole cache off."""

    # Set by the topology (topology.py): true while the cache runs on a Redis Cluster.
    stands_for_cluster: Callable[[], bool] = staticmethod(lambda: False)

    def sync(self) -> bool:
        if not self.stands_for_cluster():
            return super().sync()
        self.synced_epoch, self.applied_generation = self.connect_epoch, self.pending_generation
        self.state = CLOSED
        self.breaker_gauge.set(0)
        return True


HEALTH = ProcessHealth()


class ServerHealth(CacheHealth):
    """The breaker of a Redis server that holds none of the engine's keys: another cache alias
    (a second django-redis cache, a test's dead server). It only fails fast for a cooldown after a
    failure; there is nothing to sync, and its failures never touch the cache's own Redis."""

    holds_families = False

    def __init__(self, server: str) -> None:
        self.metric_node = server
        super().__init__()

    @property
    def needs_sync(self) -> bool:
        return self.state is OPEN

    def connected(self, run_id: str | None) -> None:
        super().connected(run_id)
        self.sync()  # it answered

    def sync(self) -> bool:
        if self.state is OPEN:
            logger.info("cache circuit closed for %s", self.metric_node)
        self.state = CLOSED
        self.breaker_gauge.set(0)
        return True


_SERVERS: dict[str, ServerHealth] = {}
_SERVERS_LOCK = threading.Lock()


def _default_servers(cache: dict) -> frozenset[str]:
    """The servers of ``caches["default"]``, named as ``GuardedMixin.server`` names them: the
    engine's key families live there, so their connections report to ``HEALTH``."""
    from redis.connection import parse_url

    topology = cache.get("OPTIONS", {}).get("TOPOLOGY", {})
    if topology.get("kind") == "sentinel":  # topology.SENTINEL (which imports this module)
        return frozenset({f"sentinel:{topology.get('service')}"})
    servers = set()
    for location in str(cache.get("LOCATION") or "").split(","):
        try:
            parsed = parse_url(location.strip())
        except ValueError:
            continue
        if "host" in parsed:  # not a unix socket (not guarded)
            servers.add(f"{parsed['host']}:{parsed.get('port', 6379)}")
    return frozenset(servers)


_DEFAULT_SERVERS: tuple[object, frozenset[str]] = (object(), frozenset())


def server_health(server: str) -> CacheHealth:
    """The health (breaker) of the Redis server named ``server`` (``host:port``, or
    ``sentinel:<service>`` for Sentinel's primary): ``HEALTH`` for the cache's own Redis, a breaker
    of its own for any other, so a dead second server never switches the cache's off."""
    global _DEFAULT_SERVERS
    cache = settings.CACHES.get("default", {})
    if _DEFAULT_SERVERS[0] != cache.get("LOCATION"):  # settings changed (tests), or the first call
        _DEFAULT_SERVERS = (cache.get("LOCATION"), _default_servers(cache))
    if server in _DEFAULT_SERVERS[1]:
        return HEALTH
    health = _SERVERS.get(server)
    if health is None:
        with _SERVERS_LOCK:
            health = _SERVERS.setdefault(server, ServerHealth(server))
    return health


def server_healths() -> dict[str, ServerHealth]:
    """The breakers of the servers other than the cache's own that this process has talked to."""
    return dict(_SERVERS)


def reset_server_healths() -> None:
    with _SERVERS_LOCK:
        for health in _SERVERS.values():
            health.reset()


_HEALTH_SOURCES: list = []


def register_health_source(source) -> None:
    """More healths the watcher must signal (cluster.py: one per node)."""
    _HEALTH_SOURCES.append(source)


def all_healths() -> list[CacheHealth]:
    return [HEALTH, *(health for source in _HEALTH_SOURCES for health in source())]


watcher().healths = all_healths


if TYPE_CHECKING:
    from redis.connection import Connection as _ConnectionBase
else:
    _ConnectionBase = object


class GuardedMixin(_ConnectionBase):
    """Connection behaviour shared by the plain and TLS connections: fail fast while the breaker
    is open, report failures to it, and count (re)connections."""

    @property
    def server(self) -> str:
        """Which Redis server this connection talks to, for its breaker."""
        return f"{getattr(self, 'orig_host_address', None) or self.host}:{self.port}"

    @property
    def health(self) -> CacheHealth:
        # The breaker of the server it talks to, looked up once per connection and default LOCATION.
        location = settings.CACHES.get("default", {}).get("LOCATION")
        known = self.__dict__.get("_guard_health")
        if known is not None and known[0] == location:
            return known[1]
        health = server_health(self.server)
        self.__dict__["_guard_health"] = (location, health)
        return health

    def connect(self):
        if self.health.blocking():
            raise redis.ConnectionError("cache circuit open")
        try:
            return super().connect()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.health.failure(exc, "connect")
            raise

    def on_connect_check_health(self, *args, **kwargs):
        super().on_connect_check_health(*args, **kwargs)
        # Which server instance is this? run_id changes on every restart.
        try:
            self.send_command("INFO", "server")
            info = self.read_response()
        except redis.ResponseError:  # INFO denied by an ACL: sync on every new connection instead
            info = ""
        if isinstance(info, bytes):
            info = info.decode()
        run_id = None
        for line in str(info).splitlines():
            if line.startswith("run_id:"):
                run_id = line.partition(":")[2].strip()
        self.health.connected(run_id)

    def send_packed_command(self, *args, **kwargs):
        if self.health.blocking():
            self.disconnect()
            raise redis.ConnectionError("cache circuit open")
        try:
            return super().send_packed_command(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.health.failure(exc, "send")
            raise

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.health.failure(exc, "read")
            raise


class GuardedConnection(GuardedMixin, Connection):
    pass


class GuardedSSLConnection(GuardedMixin, SSLConnection):
    pass


class GuardedSentinelManagedConnection(GuardedMixin, SentinelManagedConnection):
    """A connection to whichever server Sentinel names as the primary. A new primary has another
    run_id, so every process that reconnects to it syncs (replays pending deletes) first; a demoted
    primary's READONLY becomes a ConnectionError here (redis-py), which opens the breaker."""

    @property
    def server(self) -> str:
        return f"sentinel:{self.connection_pool.service_name}"  # whichever node is its primary now


class GuardedSentinelManagedSSLConnection(GuardedMixin, SentinelManagedSSLConnection):
    server = GuardedSentinelManagedConnection.server


class GuardedSentinelConnectionPool(FollowingSentinelPool):
    """django-redis's SentinelConnectionFactory with guarded connections, following a failover
    within about a second (sentinel.py). The connection class is
    chosen here, not in CONNECTION_POOL_KWARGS: the factory hands those kwargs to the Sentinel
    client's own connections too, which are plain connections to the sentinels."""

    def __init__(self, service_name, sentinel_manager, **kwargs):
        tls = kwargs.pop("ssl", False) or issubclass(kwargs.get("connection_class", Connection), SSLConnection)
        kwargs["connection_class"] = GuardedSentinelManagedSSLConnection if tls else GuardedSentinelManagedConnection
        super().__init__(service_name, sentinel_manager, **kwargs)
