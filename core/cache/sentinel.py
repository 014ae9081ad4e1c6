"""Following Sentinel's primary within about a second of a failover, and the lone primary.

redis-py asks the sentinels for the primary only when it opens a connection, so after a planned
failover the pooled connections keep talking to the demoted primary until Sentinel reconfigures it
(about ten seconds): its deletes cannot be confirmed and become pending. Two things move the pool
to the new primary sooner:

* one listener thread per process subscribes to ``+switch-master`` on every sentinel and points
  the pool at the new address at once (idle connections are closed; one in use is dropped when it
  is handed back); while it hears fewer than a majority of the sentinels it asks them who the
  primary is about once a second instead;
* a refused or unconfirmed delete (``NOREPLICAS``, ``READONLY``, a short ``WAIT``) asks the
  sentinels again, at most every ``RECHECK_EVERY`` seconds, in case a notice was missed.

The lone primary (``lone_primary``): a promoted replica whose old primary is dead, or not yet
reconfigured, has no replica that could confirm a ``WAIT``. A delete is then taken as confirmed by
the primary alone when nothing could be promoted holding an older copy of its data: it has no
replica in sync, the sentinels name it as the primary with no failover in progress, and every
replica they list is the demoted primary that has not replicated from it yet, is still in its
initial sync from it, or is down and either never replicated from it or has been down longer than
Sentinel would still promote it (ten times down-after-milliseconds). Such a delete is lost only if that primary is lost before any replica
has synced from it (docs/operations.en.md, "Redis Sentinel").
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
import weakref
from typing import cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool, SentinelConnectionPoolProxy

logger = logging.getLogger("core.cache")

SWITCH_CHANNEL = "+switch-master"
FOLLOW_GRACE = 5.0  # seconds an announced primary wins over a sentinel that has not heard of it yet
RECHECK_EVERY = 0.5  # at most one "who is the primary?" per pool in this interval after a refusal
RESUBSCRIBE_AFTER = 1.0  # a sentinel that could not be reached is tried again after this
LONE_FOR = 1.0  # seconds the sentinels' answer "no replica could be promoted" is reused


class FollowingProxy(SentinelConnectionPoolProxy):
    """What a Sentinel-managed connection asks for the primary's address; it also knows the
    address a ``+switch-master`` notice announced, which wins for ``FOLLOW_GRACE`` seconds over a
    sentinel that still names the old one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The same sentinels without redis-py's retries and their back-off: a dead sentinel must
        # cost one refused connection here, not seconds of a request's (or the listener's) time.
        self.quick_sentinels = [_without_retries(client) for client in self.sentinel_manager.sentinels]

    def reset(self) -> None:
        super().reset()
        self.followed: tuple[str, int] | None = None
        self.followed_at = 0.0
        self.lone_until: dict[tuple[str, int], float] = {}  # the sentinels' part of a lone verdict

    def lone_recently(self) -> bool:
        """Did the sentinels find the current primary alone within the last LONE_FOR seconds?"""
        address = self.master_address
        return address is not None and self.lone_until.get(address, 0.0) > time.monotonic()

    def get_master_address(self):
        LISTENER.ensure_running()  # a forked worker's first connection starts its own
        followed = self.followed
        try:
            address = self.sentinel_manager.discover_master(self.service_name)
        except MasterNotFoundError:
            if followed is None:
                raise
            address = followed
        if followed is not None:
            if address == followed or time.monotonic() - self.followed_at > FOLLOW_GRACE:
                self.followed = None
            else:
                address = followed
        self._point_at(address)
        return address

    def follow(self, address: tuple[str, int]) -> None:
        self.followed, self.followed_at = address, time.monotonic()
        self._point_at(address)

    def _point_at(self, address: tuple[str, int]) -> None:
        if not self.is_master or self.master_address == address:
            return
        self.master_address = address
        # Idle connections reconnect on their next use; one in use is dropped when it is handed
        # back (the pool keeps only connections to master_address).
        pool = self.connection_pool_ref()
        if pool is not None:
            pool.disconnect(inuse_connections=False)


class FollowingSentinelPool(SentinelConnectionPool):
    """A Sentinel pool that follows ``+switch-master`` notices and rechecks on a refusal."""

    def __init__(self, service_name, sentinel_manager, **kwargs):
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.proxy: FollowingProxy = FollowingProxy(connection_pool=self, is_master=self.is_master,
                                    check_connection=self.check_connection, service_name=service_name,
                                    sentinel_manager=sentinel_manager)
        self.connection_kwargs["connection_pool"] = self.proxy
        self._rechecked_at = 0.0
        LISTENER.watch(self)

    def follow(self, address: tuple[str, int]) -> None:
        if address != self.master_address:
            logger.info("cache follows the new Redis primary of %s at %s:%s", self.service_name, *address)
        self.proxy.follow(address)

    def recheck(self) -> None:
        """A delete was refused or not confirmed: if the sentinels name another primary by now,
        follow it (a ``+switch-master`` notice may have been missed)."""
        now = time.monotonic()
        if now - self._rechecked_at < RECHECK_EVERY:
            return
        self._rechecked_at = now
        for sentinel in self.proxy.quick_sentinels:  # as discover_master, without its retries
            try:
                state = cast("dict", sentinel.sentinel_master(self.service_name))
            except (redis.RedisError, OSError):
                continue
            if state.get("is_master") and not (state.get("is_sdown") or state.get("is_odown")):
                address = (state["ip"], state["port"])
                if address != self.master_address:
                    self.follow(address)
                return


def recheck_primary(client: redis.Redis) -> None:
    """``FollowingSentinelPool.recheck`` for this client's pool; nothing for any other client."""
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, FollowingSentinelPool):
        pool.recheck()


class SwitchListener:
    """One daemon thread per process, subscribed to ``+switch-master`` on every sentinel of every
    following pool; a sentinel it cannot reach is tried again every ``RESUBSCRIBE_AFTER`` seconds."""

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[FollowingSentinelPool] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.notices = 0  # switch notices acted on (observability)

    def watch(self, pool: FollowingSentinelPool) -> None:
        with self._lock:
            self._pools.add(pool)
        self.ensure_running()

    def ensure_running(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="cache-sentinel-listener", daemon=True)
            self._thread.start()

    def _sentinels(self) -> dict[tuple[str, int], redis.ConnectionPool]:
        with self._lock:
            pools = list(self._pools)
        found: dict[tuple[str, int], redis.ConnectionPool] = {}
        for pool in pools:
            for client in pool.sentinel_manager.sentinels:
                kwargs = client.connection_pool.connection_kwargs
                found.setdefault((kwargs.get("host"), kwargs.get("port")), client.connection_pool)
        return found

    def _run(self) -> None:
        subscribed: dict[tuple[str, int], redis.Connection] = {}
        retry_at: dict[tuple[str, int], float] = {}
        while True:
            try:
                sentinels = self._sentinels()
                for address in [a for a in subscribed if a not in sentinels]:  # no pool uses it any more
                    subscribed.pop(address).disconnect()
                now = time.monotonic()
                for address, pool in sentinels.items():
                    if address not in subscribed and retry_at.get(address, 0.0) <= now:
                        conn = _subscribe(pool)
                        if conn is None:
                            retry_at[address] = now + RESUBSCRIBE_AFTER
                        else:
                            subscribed[address] = conn
                self._poll_unheard(subscribed)
                # poll(), not select(): a long-lived process may hold descriptors above 1024.
                sockets = {cast("socket.socket", conn._sock).fileno(): address
                           for address, conn in subscribed.items() if conn._sock is not None}
                poller = select.poll()
                for fd in sockets:
                    poller.register(fd, select.POLLIN)
                readable = [fd for fd, _ in poller.poll(RESUBSCRIBE_AFTER * 1000)] if sockets else []
                if not sockets:
                    time.sleep(RESUBSCRIBE_AFTER)
                for fd in readable:
                    address = sockets[fd]
                    conn = subscribed[address]
                    try:
                        while True:  # every reply that arrived, buffered ones included
                            self._notice(conn.read_response())
                            if not conn.can_read(timeout=0):
                                break
                    except (redis.RedisError, OSError, ValueError):
                        subscribed.pop(address).disconnect()  # the sentinel went away: subscribe again
                        retry_at[address] = time.monotonic() + RESUBSCRIBE_AFTER
            except Exception:  # the listener must outlive anything; failures only delay a switch
                logger.exception("cache sentinel listener")
                time.sleep(RESUBSCRIBE_AFTER)

    def _poll_unheard(self, subscribed: dict) -> None:
        """A pool that hears some of its sentinels but not a majority may miss a notice: it asks
        who the primary is instead, about once a second, until it hears them again."""
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            sentinels = pool.sentinel_manager.sentinels
            heard = sum(1 for client in sentinels if (client.connection_pool.connection_kwargs.get("host"),
                                                      client.connection_pool.connection_kwargs.get("port")) in subscribed)
            if 0 < heard <= len(sentinels) // 2:  # none heard: asking them would not answer either
                pool.recheck()

    def _notice(self, reply) -> None:
        # A pushed message is [b"message", channel, data]; the SUBSCRIBE confirmation is not.
        if not isinstance(reply, list) or len(reply) != 3 or reply[0] != b"message":
            return
        data = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
        parts = data.split()
        if len(parts) != 5 or not parts[4].isdigit():
            return
        service, new = parts[0], (parts[3], int(parts[4]))
        with self._lock:
            pools = [pool for pool in self._pools if pool.service_name == service]
        for pool in pools:
            pool.follow(new)
        if pools:
            self.notices += 1


def _without_retries(client: redis.Redis) -> redis.Redis:
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs),
                       retry=Retry(NoBackoff(), 0))


def _subscribe(pool: redis.ConnectionPool) -> redis.Connection | None:
    """A connection of its own to one sentinel (its TLS and credentials), subscribed to the switch
    notices; None when the sentinel cannot be reached. No retries: a dead sentinel must not hold
    up the others."""
    # RESP2: the notices come as plain replies, not RESP3 pushes that redis-py hands to a PubSub.
    conn = pool.connection_class(**{**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), "protocol": 2,
                                    "socket_timeout": 1.0, "health_check_interval": 0})
    try:
        conn.connect()
        conn.send_command("SUBSCRIBE", SWITCH_CHANNEL)
        conn.read_response()
    except (redis.RedisError, OSError):
        conn.disconnect()
        return None
    return conn


LISTENER = SwitchListener()


def _forget_listener() -> None:
    # A forked child has no thread; its pools start one on their first connection.
    global LISTENER
    pools = list(LISTENER._pools)
    LISTENER = SwitchListener()
    LISTENER._pools.update(pools)


os.register_at_fork(after_in_child=_forget_listener)


# --- the lone primary ----------------------------------------------------------------------------


def lone_primary(conn) -> bool:
    """May a delete this connection just applied, which fewer replicas than asked for confirmed,
    count as confirmed by the primary alone? Only for a Sentinel-managed connection, and only when
    no node could be promoted holding an older copy of this primary's data (module docstring).
    Runs ``INFO replication`` on this connection (the server the delete went to) and asks the
    sentinels (a majority must answer, and all that answer must agree)."""
    proxy = getattr(conn, "connection_pool", None)
    manager = getattr(proxy, "sentinel_manager", None)
    if proxy is None or manager is None:
        return False
    address = (conn.host, int(conn.port))
    lone_until = getattr(proxy, "lone_until", {})
    conn.send_command("INFO", "replication")
    info = _info(conn.read_response())
    syncing = set()
    for name, value in info.items():
        if name.startswith("slave") and name[5:].isdigit():
            fields = dict(part.partition("=")[::2] for part in value.split(","))
            if fields.get("state") == "online":  # in sync but did not confirm in time: it lags
                lone_until.pop(address, None)
                return False
            syncing.add((fields.get("ip"), int(fields.get("port") or 0)))
    if info.get("role") != "master":
        lone_until.pop(address, None)
        return False
    if lone_until.get(address, 0.0) > time.monotonic():
        return True  # the sentinels said so within LONE_FOR; the primary's own side is checked above
    lone_until.pop(address, None)
    answered = 0
    sentinels = getattr(proxy, "quick_sentinels", None) or manager.sentinels
    for sentinel in sentinels:
        try:
            master = sentinel.sentinel_master(proxy.service_name)
            replicas = sentinel.sentinel_slaves(proxy.service_name)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
            continue
        answered += 1
        flags = _flags(master)
        if (master.get("ip"), master.get("port")) != address or flags & {"s_down", "o_down", "failover_in_progress"}:
            return False
        # A replica of this primary that went down may still be promoted when it returns, as long
        # as its link has been down less than about ten times down-after-milliseconds.
        horizon_ms = 10 * int(master.get("down-after-milliseconds") or 30_000)
        if any(_may_hold_older_copy(replica, syncing, address, horizon_ms) for replica in replicas):
            return False
    if answered <= len(sentinels) // 2:
        return False
    lone_until[address] = time.monotonic() + LONE_FOR
    return True


def lone_recently(client: redis.Redis) -> bool:
    """Was this client's current primary found alone within the last LONE_FOR seconds? Its
    deletes then need not wait CACHE_INVALIDATION_WAIT_MS for a replica that is not there."""
    pool = getattr(client, "connection_pool", None)
    return isinstance(pool, FollowingSentinelPool) and pool.proxy.lone_recently()


def _may_hold_older_copy(replica: dict, syncing: set, primary: tuple[str, int], horizon_ms: int) -> bool:
    flags = _flags(replica)
    if flags & {"s_down", "o_down"}:
        # Down. One that never replicated from this primary (the dead old primary after a
        # failover) syncs from it if it returns; one that did may be promoted with what it has
        # until Sentinel's own rule rules it out.
        replicated_here = (replica.get("master-host"), replica.get("master-port")) == primary
        return replicated_here and int(replica.get("s-down-time") or 0) < horizon_ms
    if replica.get("role-reported") == "master" and "promoted" not in flags:
        return False  # the demoted primary, not reconfigured yet: it never replicated from this one
    if (replica.get("ip"), replica.get("port")) in syncing:
        return False  # in its initial sync: the snapshot and the stream after it carry the delete
    return True  # up and replicating (or about to): a replica whose link just dropped may be promoted


def _flags(state: dict) -> set[str]:
    flags = state.get("flags", "")
    return set(flags.split(",")) if isinstance(flags, str) else set(flags)


def _info(reply) -> dict[str, str]:
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.partition(":")[::2] for line in text.splitlines() if ":" in line and not line.startswith("#"))
