"""A near cache: the hottest keys held in each process, kept coherent by Redis itself.

Families declared with ``near=True`` (the shared ones and ``user:email``) are served from a small
per-process map once read from Redis, without a round trip. Coherence comes from server-assisted
invalidation: one connection per process of its own (not from the pool) turns on ``CLIENT TRACKING
... BCAST PREFIX <each near family> REDIRECT <its own id>`` and SUBSCRIBEs to
``__redis__:invalidate`` (RESP2), so Redis sends it the name of every key of those families that
changes (DEL, SET, expiry, eviction, a flush), from whichever client on whichever host. A
background thread reads those messages and evicts the keys.

What can go wrong, and what it does:

* A read races a write: a value is kept only if no invalidation of its key (and no flush) arrived
  between the moment before its GET was sent and its reply (a token per read), so a reply that
  left Redis before a DEL cannot be stored after the DEL's message was applied.
* This process's own writes: ``evict`` right after its DEL returns (invalidation.py), so a request
  reads its own writes without waiting for the message.
* The tracking connection is lost (a Redis restart, CLIENT KILL, a failover: Sentinel kills the
  demoted primary's clients), or its heartbeat (a PING every ``CACHE_NEAR_HEARTBEAT_MS``) goes
  unanswered for ``CACHE_NEAR_MAX_SILENCE_MS``: the map is emptied, and until the thread has
  subscribed again every read goes to Redis. Readers themselves never use an entry while the
  thread has not heard from Redis within that silence, so a stalled thread or a silently broken
  connection cannot serve stale entries for longer than it.
* The reads and the tracking must talk to the same server instance: the data connections'
  ``run_id`` (health.py) must be the tracking connection's; a breaker open, a sync due
  (needs_sync) or a new connection epoch empties the map too, and a key whose delete is pending
  (pending.py: refused, so no invalidation message came) is never served from it.

Staleness bound: a write's message reaches every process within the network latency plus the
tracking thread's turn for the GIL (a few ms: the cross-host window of the plain Redis path);
under faults at most ``CACHE_NEAR_MAX_SILENCE_MS``. Values are the stored ``Payload`` bytes, never
live objects; the map is bounded (``CACHE_NEAR_MAX_ENTRIES``, ``CACHE_NEAR_MAX_BYTES``). In Redis
Cluster the near cache is off: tracking is per node and a reshard moves keys to a node whose
tracking would have to be set up before the key arrives there; the shared keys are one slot each,
so per-node tracking buys little for that risk. ``CACHE_NEAR_ENABLED=false`` turns it off.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis
from django.conf import settings
from django.core.signals import setting_changed
from redis.connection import SSLConnection

from core import metrics

from .client import CACHE_ERRORS, namespace, redis_client
from .family import KeyFamily
from .health import HEALTH
from .payload import Payload
from .pending import PENDING
from .topology import TOPOLOGY

logger = logging.getLogger("core.cache")

_CHANNEL = b"__redis__:invalidate"
_INFLIGHT_MAX = 10_000  # reads between begin and keep; beyond that tokens start over (they just fail)


class _Entry:
    __slots__ = ("payload", "expires", "size")

    def __init__(self, payload: Payload, expires: float, size: int) -> None:
        self.payload, self.expires, self.size = payload, expires, size


class NearCache:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, object] = {}
        self._bytes = 0
        self._generation = 0  # bumped by every flush: a read begun before it keeps nothing
        self._world: tuple = ()  # the health facts the entries were read under
        self._tracker: _Tracker | None = None
        self._configured = False

    # --- configuration ---------------------------------------------------------------------------

    def _configure(self) -> None:
        self.enabled = bool(getattr(settings, "CACHE_NEAR_ENABLED", True)) and settings.CACHE_LAYER_ENABLED
        self.max_entries = int(getattr(settings, "CACHE_NEAR_MAX_ENTRIES", 10_000))
        self.max_bytes = int(getattr(settings, "CACHE_NEAR_MAX_BYTES", 32 * 1024 * 1024))
        self.max_age = float(getattr(settings, "CACHE_NEAR_MAX_AGE", 60.0))
        self.heartbeat = float(getattr(settings, "CACHE_NEAR_HEARTBEAT_MS", 200)) / 1000
        self.silence = float(getattr(settings, "CACHE_NEAR_MAX_SILENCE_MS", 600)) / 1000
        self._configured = True

    def reset(self) -> None:
        """Forget everything and stop tracking (settings changed, tests); restarts lazily."""
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.stop()
        self.flush("reset")
        self._configured = False

    def _forked(self) -> None:
        # A forked child has no tracking thread and must not touch its parent's socket.
        self._lock = threading.RLock()
        self._entries, self._inflight, self._bytes = {}, {}, 0
        self._generation += 1
        self._tracker = None

    # --- the read path ---------------------------------------------------------------------------

    def get(self, family: KeyFamily, key: str) -> Payload | None:
        """The key's value held here, if it may be served now."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if PENDING.holds(key):  # its delete was refused: Redis (and so this map) may hold the old value
            self.evict((key,))
            return None
        now = time.monotonic()
        if not self._trusted(now):
            return None
        if entry.expires < now:
            self.evict((key,))
            return None
        family.counters.hit.inc()
        family.counters.near_hit.inc()
        return entry.payload

    def begin(self, family: KeyFamily, key: str) -> tuple | None:
        """Before a read of ``key`` from Redis: a token for ``keep``, or None when this key is not
        to be held (not a near family, near cache off or not tracking now)."""
        if not family.near or not self._usable():
            return None
        marker = object()
        if len(self._inflight) >= _INFLIGHT_MAX:
            with self._lock:
                self._inflight.clear()
        self._inflight[key] = marker
        return (family, key, marker, self._generation)

    def keep(self, token: tuple, raw: bytes | None) -> None:
        """After that read: hold its value, unless an invalidation or flush came in between."""
        family, key, marker, generation = token
        payload = Payload.unpack(raw) if raw is not None else None
        with self._lock:
            if self._inflight.get(key) is not marker:
                return
            del self._inflight[key]
            # _trusted first: a change of the data path it notices flushes (a new generation).
            if raw is None or payload is None or not self._trusted(time.monotonic()) or generation != self._generation:
                return
            size = len(raw) + len(key) + 200  # the bytes plus the map's and objects' overhead, roughly
            if size > self.max_bytes:
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            while self._entries and (len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes):
                oldest = next(iter(self._entries))  # insertion order: the oldest entry goes first
                self._bytes -= self._entries.pop(oldest).size
            ttl = min(float(family.ttl), self.max_age)
            self._entries[key] = _Entry(payload, time.monotonic() + ttl, size)
            self._bytes += size

    def ahead(self, pairs: list[tuple[KeyFamily, str]]) -> tuple[list[str], list[tuple]]:
        """For a read-ahead (MGET): the keys still to read from Redis (a key held here is left
        to fetch), and ``begin`` tokens for the near ones among them."""
        keys: list[str] = []
        tokens: list[tuple] = []
        now = time.monotonic()
        for family, key in pairs:
            entry = self._entries.get(key)
            if entry is not None and entry.expires >= now and self._trusted(now):
                continue
            keys.append(key)
            token = self.begin(family, key) if family.near else None
            if token is not None:
                tokens.append(token)
        return keys, tokens

    def keep_read(self, tokens: list[tuple], read: dict[str, bytes | None]) -> None:
        for token in tokens:
            self.keep(token, read.get(token[1]))

    def evict(self, keys) -> None:
        with self._lock:
            for key in keys:
                self._inflight.pop(key, None)
                entry = self._entries.pop(key, None)
                if entry is not None:
                    self._bytes -= entry.size

    def flush(self, reason: str) -> None:
        with self._lock:
            had = bool(self._entries)
            self._entries, self._inflight, self._bytes = {}, {}, 0
            self._generation += 1
        if had:
            metrics.near_flushes.labels(reason=reason).inc()

    # --- may it be used now? ---------------------------------------------------------------------

    def _trusted(self, now: float) -> bool:
        """Entries may be served: tracking is live and heard from, on the server the reads use,
        and nothing happened to the data path since they were read."""
        tracker = self._tracker
        if tracker is None or not tracker.subscribed or now - tracker.last_seen > self.silence:
            return False
        health = HEALTH
        if health.needs_sync or tracker.run_id is None or tracker.run_id != health.run_id:
            return False
        world = (health.connect_epoch, tracker.session)
        if world != self._world:
            self.flush("redis")
            self._world = world
        return True

    def _usable(self) -> bool:
        if not self._configured:
            self._configure()
        if not self.enabled or TOPOLOGY.cluster:
            return False
        if self._tracker is None:
            self._start()
            return False
        return self._trusted(time.monotonic())

    def _start(self) -> None:
        with self._lock:
            if self._tracker is None:
                self._tracker = _Tracker(self)
                self._tracker.start()

    def prefixes(self) -> list[str]:
        from .registry import FAMILIES

        ns = namespace()
        return sorted({ns + family.template.split("{", 1)[0] for family in FAMILIES.values() if family.near})

    def strip(self, raw_key: bytes) -> str | None:
        key = raw_key.decode(errors="replace")
        ns = namespace()
        return key[len(ns):] if key.startswith(ns) else None


class _Tracker:
    """The tracking connection and the thread that reads its messages."""

    def __init__(self, near: NearCache) -> None:
        self.near = near
        self.subscribed = False
        self.last_seen = 0.0
        self.run_id: str | None = None
        self.session = 0
        self._stopped = threading.Event()
        self._conn: redis.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="cache-near-tracking", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._lost()
        conn = self._conn
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: S110 (already gone)
                pass

    def _run(self) -> None:
        delay = 0.0
        while not self._stopped.is_set():
            try:
                self._track()
                delay = 0.0
            except (*CACHE_ERRORS, OSError) as exc:
                if self.subscribed:  # once per loss, not per attempt to come back
                    logger.info("cache near tracking lost: %s: %s", type(exc).__name__, exc)
            finally:
                self._lost()
            delay = min(delay * 2 or 0.05, 1.0)
            self._stopped.wait(delay)

    def _lost(self) -> None:
        was = self.subscribed
        self.subscribed = False
        if was:
            self.near.flush("tracking")

    def _connection(self) -> redis.Connection:
        pool = redis_client().connection_pool
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
        if hasattr(pool, "get_master_address"):  # Sentinel: whichever server is the primary now
            kwargs["host"], kwargs["port"] = pool.get_master_address()
        kwargs.update(protocol=2, socket_timeout=max(settings.REDIS_SOCKET_TIMEOUT, self.near.heartbeat),
                      socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT, client_name="cache-near-tracking")
        kwargs.pop("retry", None)
        cls = redis.SSLConnection if issubclass(pool.connection_class, SSLConnection) else redis.Connection
        return cls(**kwargs)

    def _call(self, conn: redis.Connection, *args):
        conn.send_command(*args)
        reply = conn.read_response()
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def _track(self) -> None:
        near = self.near
        prefixes = near.prefixes()
        if not prefixes:
            self._stopped.wait(1.0)
            return
        conn = self._conn = self._connection()
        try:
            conn.connect()
            info = self._call(conn, "INFO", "server")
            info = info.decode() if isinstance(info, bytes) else str(info)
            run_id = next((line.partition(":")[2].strip() for line in info.splitlines()
                           if line.startswith("run_id:")), None)
            client_id = self._call(conn, "CLIENT", "ID")
            self._call(conn, "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST",
                       *(part for prefix in prefixes for part in ("PREFIX", prefix)))
            reply = self._call(conn, "SUBSCRIBE", _CHANNEL)
            if not (isinstance(reply, list) and reply[0] == b"subscribe"):
                raise redis.ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}")
            # A new session: whatever was held under the last one may have missed messages.
            near.flush("tracking")
            self.run_id = run_id
            self.session += 1
            self.last_seen = time.monotonic()
            self.subscribed = True
            self._listen(conn)
        finally:
            self._conn = None
            conn.disconnect()

    def _listen(self, conn: redis.Connection) -> None:
        near = self.near
        pinged = 0.0
        while not self._stopped.is_set():
            now = time.monotonic()
            if now - self.last_seen > near.silence:
                raise redis.TimeoutError("tracking heartbeat missed")
            if now - pinged >= near.heartbeat:
                conn.send_command("PING")
                pinged = now
            if not conn.can_read(timeout=near.heartbeat):
                continue
            reply = conn.read_response()
            self.last_seen = time.monotonic()
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message" and reply[1] == _CHANNEL:
                keys = reply[2]
                if keys is None:  # FLUSHDB / FLUSHALL
                    near.flush("server_flush")
                else:
                    near.evict([key for key in map(near.strip, keys) if key is not None])
            if HEALTH.run_id is not None and HEALTH.run_id != self.run_id and not HEALTH.needs_sync:
                # The reads go to another server instance now (a failover): track that one.
                raise redis.ConnectionError("the data connections use another server")


NEAR = NearCache()
os.register_at_fork(after_in_child=NEAR._forked)


def _settings_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "CACHES" or setting.startswith("CACHE_NEAR_") or setting in ("CACHE_LAYER_ENABLED", "CACHE_NAMESPACE"):
        NEAR.reset()


setting_changed.connect(_settings_changed, dispatch_uid="core.cache.near")
