"""Redis health for this process: a circuit breaker and the "trusted" state of cached reads.

Two facts decide whether a cached read may be served:

* the breaker is closed: after any Redis failure (refused, timeout, MISCONF on a write) Redis is
  skipped for ``CACHE_BREAKER_COOLDOWN`` seconds, so a stalled server costs one timeout, not one
  per request;
* the key is not pending: an invalidation that could not reach Redis (or that its replicas did not
  confirm) was recorded in PostgreSQL (``core.PendingInvalidation``); that key, and only that key,
  is read from the database until its delete is applied and confirmed. Every process knows the
  pending keys (pending.py keeps them in memory, watch.py keeps them current);
* the process has synced with this server instance: on a fresh connection to a server it has not
  synced with (a restarted Redis may have replayed old values from its AOF; a new primary after a
  failover may miss deletes the old one took) it reloads the pending keys and applies them first.
  A key with no pending row needs nothing: its delete was confirmed, so the new instance has it.
  The sync is a few SQL queries, run only on those transitions, never on a warm hit.

A server that answers but refuses writes for want of replicas (NOREPLICAS, or a WAIT that too few
replicas confirmed) does not open the breaker: its refused deletes become pending keys, and every
other key stays served from it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import redis
from django.conf import settings
from redis.connection import Connection, SSLConnection
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from core import metrics

from .client import CACHE_ERRORS, redis_client
from .pending import PENDING, drain_pending_invalidations, reload_pending_keys
from .replication import NotReplicated, unlink_confirmed
from .sentinel import FollowingSentinelPool
from .watch import watcher

logger = logging.getLogger("core.cache")

CLOSED, OPEN = "closed", "open"


def refused(exc: BaseException) -> bool:
    """The server answered and refused a write for want of replicas: not a fault of the server."""
    return isinstance(exc, NotReplicated) or (isinstance(exc, redis.ResponseError) and "NOREPLICAS" in str(exc))


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
        self.overflow_retry_at = 0.0  # too many pending keys and some refused: when to try again
        self.drain_at = 0.0  # without the watcher: when a read of a pending key may drain again
        self.breaker_gauge.set(0)

    @property
    def needs_sync(self) -> bool:
        return self.state is OPEN or self.synced_epoch != self.connect_epoch or PENDING.overflow

    def ready_for(self, key: str) -> bool:
        """May this family key (as recorded, without the namespace) be read from Redis right now?
        Never while its delete is pending; otherwise as ``ready()``."""
        if PENDING.holds(key):
            if settings.CACHE_PENDING_WATCH:  # the watcher applies it in the background
                return False
            # No watcher: reads of a pending key apply the pending deletes, once per cooldown.
            now = time.monotonic()
            if now < self.drain_at or self.blocking():
                return False
            self.drain_at = now + settings.CACHE_BREAKER_COOLDOWN
            if not self.sync() or PENDING.holds(key):
                return False
        return self.ready()

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
        if refused(exc):
            # The server is up and serves reads: the caller records the refused deletes as pending.
            metrics.cache_errors.labels(operation=operation).inc()
            self.log.warning(f"{operation}:refused", f"cache {operation} refused, its keys stay pending: {exc}")
            return
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
        if self.blocking() or (PENDING.overflow and time.monotonic() < self.overflow_retry_at):
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
        if not self.needs_sync and not self.owns_pending():  # it finished while we waited
            self._sync_lock.release()
            return True
        try:
            client = self.client()
            client.ping()  # may reconnect, bumping connect_epoch
            epoch = self.connect_epoch
            self.drain_pending(client)
        except (*CACHE_ERRORS, DatabaseError) as exc:
            self.failure(exc, "sync")
            return False
        finally:
            self._sync_lock.release()
        self.synced_epoch = epoch
        if PENDING.overflow:  # too many keys left pending (refused): every key stays bypassed
            self.overflow_retry_at = time.monotonic() + settings.CACHE_BREAKER_COOLDOWN
            return False
        if self.state is OPEN:
            logger.info("cache circuit closed")
        self.state = CLOSED
        self.breaker_gauge.set(0)
        return True

    def client(self) -> redis.Redis:
        return redis_client()

    def owns_pending(self) -> bool:
        """Are some pending keys this health's to apply?"""
        return PENDING.any()

    def drain_pending(self, client: redis.Redis) -> None:
        """Load the pending keys (the first step of trusting a server instance), then apply them.
        Deletes that are refused leave their keys pending, not the server untrusted."""
        reload_pending_keys()
        self.apply_pending(client)

    def apply_pending(self, client: redis.Redis) -> None:
        try:
            self.drain(client)
        except redis.RedisError as exc:
            if not refused(exc):
                raise
            self.failure(exc, "sync")
        if PENDING.overflow:
            reload_pending_keys()  # what the drain applied may have brought the set back in bounds

    def drain(self, client: redis.Redis) -> int:
        return drain_pending_invalidations(client, unlink=unlink_confirmed)

    def unlink(self, keys: list[str]) -> None:
        """Delete these keys where this health's server holds them (a cluster node: cluster.py)."""
        unlink_confirmed(redis_client(), keys)

    def pending_recorded(self) -> None:
        """Invalidations were recorded for later (their keys are pending already): the watcher
        applies them in the background; the notification tells every other worker."""
        watcher().retry_soon()


class ProcessHealth(CacheHealth):
    """The process's health. In cluster mode it only stands for "the cluster cannot be reached at
    all" (its breaker ends with its cooldown): each node drains its own slots' pending deletes, and
    draining them all here would fail on any one dead node and switch the whole cache off."""

    # Set by the topology (topology.py, which imports this module): true while the cache runs on a
    # Redis Cluster; the service whose primary Sentinel names for it ("" without Sentinel).
    stands_for_cluster: Callable[[], bool] = staticmethod(lambda: False)
    sentinel_service: Callable[[], str] = staticmethod(lambda: "")

    def reset(self) -> None:
        PENDING.reset()  # the process's knowledge of pending keys goes with its trust (tests)
        super().reset()

    def owns_pending(self) -> bool:
        return not self.stands_for_cluster() and super().owns_pending()  # in a cluster each node's

    def sync(self) -> bool:
        if not self.stands_for_cluster():
            return super().sync()
        self.synced_epoch = self.connect_epoch
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

    def owns_pending(self) -> bool:
        return False

    def connected(self, run_id: str | None) -> None:
        super().connected(run_id)
        self.sync()  # it answered

    def sync(self) -> bool:
        if self.state is OPEN:
            logger.info("cache circuit closed for %s", self.metric_node)
        self.state = CLOSED
        self.breaker_gauge.set(0)
        return True


H = TypeVar("H", bound="CacheHealth")


class Healths(Generic[H]):
    """Breakers by server name, one per server, made on first use and shared by the process's
    threads (Redis Cluster's nodes, the servers other than the cache's own)."""

    def __init__(self, make: Callable[[str], H]) -> None:
        self._make = make
        self._by_name: dict[str, H] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> H:
        health = self._by_name.get(name)
        if health is None:
            with self._lock:
                health = self._by_name.setdefault(name, self._make(name))
        return health

    def all(self) -> dict[str, H]:
        return dict(self._by_name)

    def reset(self, *, forget: bool = False) -> None:
        with self._lock:
            for health in self._by_name.values():
                health.reset()
            if forget:
                self._by_name.clear()


_SERVERS: Healths[ServerHealth] = Healths(ServerHealth)


def _default_servers(cache: dict) -> frozenset[str]:
    """The servers of ``caches["default"]``, named as ``GuardedMixin.server`` names them: the
    engine's key families live there, so their connections report to ``HEALTH``."""
    from redis.connection import parse_url

    service = HEALTH.sentinel_service()
    if service:
        return frozenset({f"sentinel:{service}"})
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
    return _SERVERS.get(server)


def server_healths() -> dict[str, ServerHealth]:
    """The breakers of the servers other than the cache's own that this process has talked to."""
    return _SERVERS.all()


def reset_server_healths() -> None:
    _SERVERS.reset()


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
