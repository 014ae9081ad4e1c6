"""``cache_verify``: recompute cached values from the database and report (or delete) drift."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
import redis
from django.core.exceptions import ObjectDoesNotExist

from ..client import namespace, redis_client
from ..family import KeyFamily
from ..keys import HASH_MARK
from ..payload import Payload
from ..registry import FAMILIES
from ..scripts import UNLINK_IF_UNCHANGED
from .common import Progress, batches, mget, no_progress, scan_family


@dataclass
class Drift:
    key: str
    family: str
    reason: str  # "differs", "row gone", "unreadable"


@dataclass
class VerifyResult:
    checked: dict[str, int] = field(default_factory=dict)
    unverifiable: dict[str, int] = field(default_factory=dict)  # a hashed part cannot be turned back
    drifted: list[Drift] = field(default_factory=list)
    fixed: int = 0
    seconds: float = 0.0


def _canonical(data) -> object:
    # The database value as the cache would hold it: through the same JSON encoder and back.
    return orjson.loads(orjson.dumps(data))


def verify(families: Iterable[KeyFamily] | None = None, *, fix: bool = False, progress: Progress = no_progress,
           client: redis.Redis | None = None) -> VerifyResult:
    """Recompute every cached value from the database with its family's reader and compare the
    ``data``. A mismatch is re-read before it counts, so a write that invalidated the key during
    the check is not reported. With ``fix`` the drifted keys are deleted (if still unchanged)."""
    client = client or redis_client()
    started = time.perf_counter()
    result = VerifyResult()
    prefix = namespace()
    for family in families or FAMILIES.values():
        result.checked[family.name] = 0
        for batch in batches(scan_family(client, family), 500):
            values = mget(client, batch)
            versions = _versions(client, family, batch)
            for key, raw in zip(batch, values, strict=True):
                if raw is None:
                    continue  # expired or invalidated since the scan
                parts = family.parts_of(key[len(prefix):])
                if parts is None:  # SCAN's pattern matched a key of another shape
                    continue
                if any(value.startswith(HASH_MARK) for value in parts.values()):
                    result.unverifiable[family.name] = result.unverifiable.get(family.name, 0) + 1
                    continue
                if family.version is not None and not _counts(raw, versions.get(key)):
                    continue  # built under a version that is gone: never served, as if expired
                result.checked[family.name] += 1
                reason = _judge(family, parts, raw)
                if reason is None or client.get(key) != raw:
                    continue
                result.drifted.append(Drift(key, family.name, reason))
                if fix:
                    # only if unchanged: a write that re-cached meanwhile wins
                    result.fixed += int(UNLINK_IF_UNCHANGED.run(client, [key], [raw]))
            progress(len(batch))
    result.seconds = time.perf_counter() - started
    return result


def _versions(client: redis.Redis, family: KeyFamily, keys: list[str]) -> dict[str, bytes | None]:
    """Each key's current version (its family's version key), for a family that has one."""
    if family.version is None:
        return {}
    prefix = namespace()
    of = {}
    for key in keys:
        parts = family.parts_of(key[len(prefix):])
        if parts is not None and not any(value.startswith(HASH_MARK) for value in parts.values()):
            of[key] = prefix + family.version.key(**parts)
    names = list(dict.fromkeys(of.values()))
    current = dict(zip(names, mget(client, names), strict=True)) if names else {}
    return {key: current[name] for key, name in of.items()}


def _counts(raw: bytes, version: bytes | None) -> bool:
    payload = Payload.unpack(raw)
    return payload is None or (version is not None and payload.stamp == version)  # unreadable: judged below


def _judge(family: KeyFamily, parts: dict[str, str], raw: bytes) -> str | None:
    payload = Payload.unpack(raw)
    if payload is None:
        return "unreadable"
    try:
        cached = payload.data()
    except orjson.JSONDecodeError:
        return "unreadable"
    try:
        fresh = family.load(**parts)
    except ObjectDoesNotExist:
        return "row gone"
    return None if _canonical(fresh) == cached else "differs"
