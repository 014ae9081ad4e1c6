"""The Redis client the cache layer uses, and how its keys are spelled in Redis."""

from __future__ import annotations

from collections.abc import Iterable

import redis
from django.conf import settings
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisClusterException

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
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        client.delete(*(full_key(k) for k in chunk), *(lease_key(k) for k in chunk))


def read_command(client: redis.Redis, *args: str):
    """Run one read command (GET, MGET) on a pooled connection, without redis-py's per-command
    layers (option parsing, retry wrapper, observability hooks): on a cached hit they cost about
    as much CPU as the round trip itself. Failures raise as from ``execute_command``; the guarded
    connection has already reported them to the breaker. Cluster and other clients take their
    usual path."""
    if type(client) is not redis.Redis:
        return client.execute_command(*args)
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_command(*args), check_health=False)
        return conn.read_response()
    except redis.ResponseError:
        raise  # the reply was read whole: the connection is still good
    except BaseException:
        conn.disconnect()  # half a reply may be left on it: never hand it out again
        raise
    finally:
        pool.release(conn)
