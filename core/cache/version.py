"""Version keys (``family.Version``): O(1) invalidation of fan-outs.

A write that changes what many cached values were built from (a plan edit: every subscriber's
subscription and stats; a rename: every chat session under the old name) deletes one version key
instead of every key. A value is stamped with the version it was built under and counts only
while the version key exists and holds that version: a read gets the value and the version in one
round trip (MGET; in Redis Cluster one MGET per slot, pipelined per node).

Why this keeps "no read serves a value older than an acknowledged write": a fill reads the version
*before* it loads from the database, and stamps the value with it. A write commits, then deletes
the version key (after commit, as any invalidation; failed or unconfirmed by replicas: recorded as
pending, as any delete). A load that missed the write started before that delete, so it was
stamped with a version that is gone by the time the write is acknowledged. Versions are random
(never reused), so a version created after the delete never matches an older stamp; a missing
version key means misses (the next fill creates a new one), never a stale hit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import redis

from .client import full_key
from .family import KeyFamily, Parts
from .payload import STAMP_LEN, Payload
from .scripts import VERSION_OF


def version_key(family: KeyFamily, parts: Parts) -> str:
    """The full key (namespace included) of the version this family's value for ``parts`` counts under."""
    assert family.version is not None
    return full_key(family.version.key(**parts))


def current(payload: Payload | None, version: bytes | None) -> bool:
    """Does this cached value count: stamped with the version its scope holds now?"""
    return payload is not None and version is not None and payload.stamp == version


def new_version() -> bytes:
    return os.urandom(STAMP_LEN // 2).hex().encode()


def version_of(client: redis.Redis, key: str) -> bytes:
    """The version to stamp a fill with (``key``: the full version key): the current one, or a
    new one when the key is missing. One command."""
    return VERSION_OF.run(client, [key], [new_version()])


def versions_of(client: redis.Redis, keys: Iterable[str]) -> dict[str, bytes]:
    """``version_of`` for several version keys (a warm-up batch), one command each."""
    return {key: version_of(client, key) for key in dict.fromkeys(keys)}
