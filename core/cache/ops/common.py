"""What every ops command needs: families by name, SCAN over a family, batching."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import cast

import redis
from redis.cluster import RedisCluster

from ..client import namespace, redis_client
from ..family import KeyFamily
from ..registry import FAMILIES
from ..topology import TOPOLOGY

BATCH = 1000

Progress = Callable[[int], None]


def no_progress(_: int) -> None:
    pass


class UnknownFamily(ValueError):
    pass


def resolve_families(names: Iterable[str]) -> list[KeyFamily]:
    """Registry families by name, in registry order; UnknownFamily names the valid ones."""
    names = list(names)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise UnknownFamily(f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                            f"choose from: {', '.join(FAMILIES)}")
    return [family for name, family in FAMILIES.items() if name in names]


def glob_escape(text: str) -> str:
    # The namespace is operator-supplied: a '*' or '[' in it must match literally in SCAN MATCH.
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def scan_pattern(family: KeyFamily) -> str:
    return glob_escape(namespace()) + family.pattern


def scan_family(client: redis.Redis, family: KeyFamily, count: int = BATCH) -> Iterator[str]:
    """Full keys (with namespace) of one family. SCAN's glob '*' also matches ':', so each hit is
    checked against the family's exact shape before it is reported."""
    prefix = namespace()
    for raw in client.scan_iter(match=scan_pattern(family), count=count):
        key = raw.decode("utf-8", "surrogateescape")
        if key.startswith(prefix) and family.parts_of(key[len(prefix):]) is not None:
            yield key


def batches(items: Iterable, size: int = BATCH) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ping(client: redis.Redis | None = None) -> None:
    """Raise redis.RedisError when Redis cannot be reached: commands fail loudly, unlike requests."""
    (client or redis_client()).ping()


def mget(client: redis.Redis, keys: list[str]) -> list[bytes | None]:
    """MGET, one per slot in cluster mode (a multi-key command must stay in one slot)."""
    if TOPOLOGY.cluster:
        return cast("list[bytes | None]", cast(RedisCluster, client).mget_nonatomic(keys))
    return cast("list[bytes | None]", client.mget(keys))


def primaries(client: redis.Redis) -> dict[str, redis.Redis]:
    """Each primary's own client by name (host:port) in cluster mode; empty for one Redis."""
    if not TOPOLOGY.cluster:
        return {}
    cluster = cast(RedisCluster, client)
    return {node.name: cluster.get_redis_connection(node) for node in cluster.get_primaries()}
