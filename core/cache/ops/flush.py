"""``cache_flush``: delete keys by family or one key, with SCAN + UNLINK in batches."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from ..client import full_key, lease_key, namespace, redis_client
from ..family import KeyFamily
from ..registry import family_of
from .common import Progress, UnknownFamily, batches, glob_escape, no_progress, scan_family


def flush(families: Iterable[KeyFamily], *, dry_run: bool = False, progress: Progress = no_progress,
          client: redis.Redis | None = None) -> dict[str, int]:
    """Delete every key of these families (and their leases, so no in-flight reader can store a
    value it loaded before the flush). Returns the number of keys per family."""
    client = client or redis_client()
    prefix = namespace()
    counts: dict[str, int] = {}
    families = list(families)
    for family in families:
        counts[family.name] = 0
        for batch in batches(scan_family(client, family)):
            if not dry_run:
                client.unlink(*batch, *(lease_key(k[len(prefix):]) for k in batch))
            counts[family.name] += len(batch)
            progress(len(batch))
    # The version keys these families count under go too: what a flush left is rebuilt under new ones.
    for version in dict.fromkeys(family.version for family in families if family.version is not None):
        for keys in batches(client.scan_iter(match=glob_escape(prefix) + version.pattern, count=1000)):
            if not dry_run:
                client.unlink(*keys)
    return counts


def flush_key(key: str, *, dry_run: bool = False, client: redis.Redis | None = None) -> tuple[KeyFamily, int]:
    """Delete one key of a family. ``key`` is as the registry names it (namespace optional)."""
    client = client or redis_client()
    prefix = namespace()
    bare = key[len(prefix):] if prefix and key.startswith(prefix) else key
    family = family_of(bare)
    if family is None:
        raise UnknownFamily(f"{key!r} is not a key of any cache family; refusing to delete it")
    if dry_run:
        return family, int(client.exists(full_key(bare)))
    deleted = client.unlink(full_key(bare), lease_key(bare))
    return family, min(int(deleted), 1)
