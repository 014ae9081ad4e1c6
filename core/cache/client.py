"""The Redis client the cache layer uses, and how its keys are spelled in Redis."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import cast

import redis
from django.conf import settings
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import NoScriptError, RedisClusterException

from .scripts import BY_SHA

# Whatever the Redis client raises degrades to the database: RedisError, cluster errors that are
# not RedisErrors (no reachable node, slot not covered), django-redis's wrapper of them, and
# ValueError/TypeError from a bad configuration.
CACHE_ERRORS = (redis.RedisError, RedisClusterException, ConnectionInterrupted, ValueError, TypeError)


def parse_host_ports(entries: Iterable[str], *, setting: str) -> list[tuple[str, int]]:
    """``["host:port", ...]`` (IPv6 in brackets, ``[::1]:6379``) as (host, port) pairs; a ValueError
    names the setting and the bad entry."""
    pairs = []
    for entry in entries:
        host, sep, port = entry.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{setting} entry {entry!r} is not host:port")
        pairs.append((host, int(port)))
    return pairs


def redis_client() -> redis.Redis:
    return get_redis_connection("default")


def namespace() -> str:
    return settings.CACHE_NAMESPACE


def full_key(key: str) -> str:
    return namespace() + key


def lease_key(key: str) -> str:
    # "lease:" in front keeps lease keys out of every family's SCAN pattern.
    return namespace() + "lease:" + key


def unlink_keys(client: redis.Redis, keys: list[str], batch: int = 500) -> None:
    """Delete keys and their leases, a bounded batch per command (a plan edit may touch
    thousands of subscribers, and one huge DEL would block Redis)."""
    for command in unlink_commands(keys, batch):
        client.execute_command(*command)


def unlink_commands(keys: list[str], batch: int = 500) -> list[tuple[object, ...]]:
    """``unlink_keys`` as commands of a batch (``pipelined``)."""
    return [("DEL", *(full_key(k) for k in chunk), *(lease_key(k) for k in chunk))
            for chunk in (keys[start : start + batch] for start in range(0, len(keys), batch))]


class _Pinned:
    """One pooled connection a thread keeps for its cached reads, so a hit skips the pool's
    checkout and return (two locks, two pid checks and four observability records). Handed
    back to its pool when the thread ends or another pool takes its place; dropped in a forked
    child."""

    __slots__ = ("pool", "conn")

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self.conn = pool.get_connection()

    def __del__(self) -> None:
        try:
            self.pool.release(self.conn)
        except Exception:  # noqa: S110 (interpreter shutdown, or the pool is gone already)
            pass


class _PinnedLocal(threading.local):
    pinned: _Pinned | None = None


_PINNED = _PinnedLocal()


def _forget_pinned() -> None:
    # A forked child must not share its parent's sockets (nor hand them back to its pool).
    global _PINNED
    _PINNED = _PinnedLocal()


os.register_at_fork(after_in_child=_forget_pinned)


def read_command(client: redis.Redis, *args: str):
    """Run one read command (GET, MGET) on this thread's connection (``_Pinned``), without
    redis-py's per-command layers (option parsing, retry wrapper, observability hooks): on a
    cached hit they cost about as much CPU as the round trip itself. Failures raise as from
    ``execute_command``; the guarded connection has already reported them to the breaker.
    Cluster, Sentinel and other clients take their usual path (a Sentinel pool checks on return
    that a connection still points at the primary)."""
    if type(client) is not redis.Redis or type(client.connection_pool) is not redis.ConnectionPool:
        return client.execute_command(*args)
    pool = client.connection_pool
    pinned = _PINNED.pinned
    if pinned is None or pinned.pool is not pool:
        pinned = _PINNED.pinned = _Pinned(pool)
    conn = pinned.conn
    if conn._sock is not None:
        # As the pool checks on checkout: readable before we asked means the server closed it (a
        # restart) or a reply was left behind. Start over on a new connection, which syncs with
        # the restarted server before its reads are trusted.
        try:
            stale = conn.can_read()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            conn.disconnect()
    try:
        conn.send_packed_command(conn.pack_command(*args), check_health=False)
        return conn.read_response()
    except redis.ResponseError:
        raise  # the reply was read whole: the connection is still good
    except BaseException:
        conn.disconnect()  # half a reply may be left on it: the next command reconnects first
        raise


def pipelined(client: redis.Redis, commands: list[tuple[object, ...]], after=None) -> list:
    """Many commands in one round trip, each reply in its place: ``read_command`` for a batch. The
    ops commands send hundreds of small commands per round trip, where redis-py's pipeline layers
    cost more than Redis does. Replies come raw (SET gives b"OK" or None). An ``EVALSHA`` that
    Redis answers with NOSCRIPT (restarted, failed over, flushed) did not run: its script is loaded
    and those commands are sent again, once. Any other error reply raises once the batch is read.
    Cluster and other clients take a pipeline. ``after(connection, replies)``, if given, runs on
    the connection that ran the batch once its replies are read (replication.py: the lone
    primary's check must ask the server that took the deletes)."""
    replies = _send(client, commands, after)
    unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if unknown:
        for sha in {commands[i][1] for i in unknown}:
            client.script_load(BY_SHA[cast(str, sha)].text)
        if commands[-1][0] == "WAIT":  # a batch that ends waiting for replicas waits for these too
            unknown.append(len(commands) - 1)
        for i, reply in zip(unknown, _send(client, [commands[i] for i in unknown], after), strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies


def _send(client: redis.Redis, commands: list[tuple[object, ...]], after=None) -> list:
    """The batch's replies, an error reply in its place as its exception."""
    if type(client) is not redis.Redis:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)
    if not commands:
        return []
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        replies = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:  # read whole: the next reply follows
                replies.append(exc)
        if after is not None:
            after(conn, replies)
        return replies
    except BaseException:
        conn.disconnect()  # replies may be left on it: never hand it out again
        raise
    finally:
        pool.release(conn)
