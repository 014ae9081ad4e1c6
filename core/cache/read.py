"""Read-through caching of JSON bodies with leases.

Read (``fetch``): GET the key; on a hit return the stored body untouched. On a miss take a short
lease (``SET lease:<key> <token> NX PX``), build the value from the database, then store it only
if the lease is still ours (``store_if_leased.lua``). Invalidation deletes the key *and* its
lease, so a reader that loaded the old row before a write committed can no longer store it (the
stale-set race). Requests that miss while another holds the lease wait briefly for its value
instead of querying too (single flight); while Redis cannot be trusted, identical loads within a
process share one query instead (coalesce.py). Losing a lease to eviction costs a miss, never a stale
value. Warm-up fills a batch of keys the same way (``fill_many``): leases, one bulk load, the same
compare-and-set per key.
A family with a version key (version.py) is read with its version in the same round trip: a value
counts only while it carries the version its scope holds now, and a fill stamps what it stores
with the version it saw before loading.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import cast

import redis
from django.conf import settings
from django.db import transaction

from .client import CACHE_ERRORS, full_key, lease_key, pipelined, read_command, redis_client
from .cluster import cluster_client
from .coalesce import load_once
from .family import KeyFamily, Parts
from .health import HEALTH, CacheHealth
from .hooks import HOOKS
from .lease import LEASE_KEEPER
from .near import NEAR
from .payload import Payload
from .pending import PENDING
from .scripts import RELEASE_LEASE, STORE_IF_LEASED
from .topology import TOPOLOGY
from .version import current, version_key, version_of, versions_of

_KEEP = "0"  # store_if_leased.lua: on a lost lease leave the key to whoever took the lease


def read_ahead(*targets: tuple[KeyFamily, Parts]) -> dict[str, bytes | None]:
    """Read several keys in one round trip (MGET), for ``fetch(..., readahead=...)`` to use:
    authentication reads the user's key and the endpoint's key together. Empty when Redis cannot
    be trusted right now; fetch then takes its usual path. In cluster mode: one MGET per slot,
    pipelined per node, skipping the keys whose node cannot be trusted now."""
    if not settings.CACHE_LAYER_ENABLED:
        return {}
    if TOPOLOGY.cluster:
        keys = [family.key(**parts) for family, parts in targets]
        return _read_ahead_cluster(keys + _version_keys(targets, keys))
    pairs = [(family, key) for family, key in ((family, family.key(**parts)) for family, parts in targets)
             if not PENDING.holds(key)]
    if not pairs or not HEALTH.ready():
        return {}
    # Keys held in process (near.py) are left to fetch; the others may be kept once read.
    keys, tokens = NEAR.ahead(pairs)
    if not keys:
        return {}
    keys += _version_keys(targets, keys)
    try:
        values = read_command(redis_client(), "MGET", *(full_key(k) for k in keys))
    except CACHE_ERRORS as exc:
        HEALTH.failure(exc, "get")
        return {}
    if HEALTH.needs_sync:  # the connection was (re)made during the call: fetch syncs first
        return {}
    read = dict(zip(keys, cast("list[bytes | None]", values), strict=True))
    NEAR.keep_read(tokens, read)
    return read


def _version_keys(targets: tuple[tuple[KeyFamily, Parts], ...], keys: list[str]) -> list[str]:
    """The version keys the versioned targets count under, once each (read in the same MGET)."""
    versions: list[str] = []
    for family, parts in targets:  # a loop, not comprehensions: this runs on every cached read
        if family.version is not None:
            key = family.version.key(**parts)
            # A pending version key is left out: fetch then reads the value the way that bypasses it.
            if key not in keys and key not in versions and not PENDING.holds(key):
                versions.append(key)
    return versions


def _read_ahead_cluster(keys: list[str]) -> dict[str, bytes | None]:
    healths = {key: TOPOLOGY.health_for(full_key(key)) for key in keys}
    keys = [key for key in keys if healths[key].ready_for(key)]
    if not keys:
        return {}
    try:
        values = cast("list[bytes | None]", cluster_client().mget_nonatomic([full_key(k) for k in keys]))
    except CACHE_ERRORS:
        # A node's connection errors already reached its breaker; fetch reads each key on its
        # own and charges any other error to the right node.
        return {}
    return {key: value for key, value in zip(keys, values, strict=True) if not healths[key].needs_sync}


def fetch(family: KeyFamily, /, readahead: dict[str, bytes | None] | None = None, **parts: object) -> Payload:
    """The family's value for these parts: from Redis when it can be trusted, else the database.
    With ``readahead`` (from read_ahead) a key read there is used instead of another GET."""
    if not settings.CACHE_LAYER_ENABLED:  # benchmark baselines: no cache, or another cache
        return Payload.of(family.load(**parts))
    key = family.key(**parts)
    held = NEAR.get(family, key)
    if held is not None:
        return held
    if family.version is not None:
        return _fetch_versioned(family, key, parts, readahead)
    if readahead and key in readahead:
        return _serve(family, key, parts, readahead.pop(key))
    trusted, raw = _get(family, key)
    if not trusted:  # from the database; identical loads in this process share one query
        return load_once(key, lambda: Payload.of(family.load(**parts)))
    return _serve(family, key, parts, raw)


def _fetch_versioned(family: KeyFamily, key: str, parts: dict, readahead: dict[str, bytes | None] | None) -> Payload:
    assert family.version is not None
    version = family.version.key(**parts)
    if readahead and key in readahead and version in readahead:  # read together, version first-hand
        return _serve(family, key, parts, readahead.pop(key), readahead[version])
    trusted, raw, current_version = _get_versioned(family, key, parts)
    if not trusted:
        return load_once(key, lambda: Payload.of(family.load(**parts)))
    return _serve(family, key, parts, raw, current_version)


def fetch_data(family: KeyFamily, /, **parts: object):
    return fetch(family, None, **parts).data()


def read_if_cached(family: KeyFamily, /, **parts: object) -> Payload | None:
    """The family's cached value for these parts, or None when it is not cached or Redis cannot be
    trusted right now. Never loads: for a write that can read the same thing from its own rows
    instead (subscriptions.services.usage_count takes the plan's daily limit from it)."""
    if not settings.CACHE_LAYER_ENABLED:
        return None
    if family.version is not None:
        trusted, raw, version = _get_versioned(family, family.key(**parts), parts)
        payload = Payload.unpack(raw) if raw is not None else None
        payload = payload if current(payload, version) else None
    else:
        trusted, raw = _get(family, family.key(**parts))
        payload = Payload.unpack(raw) if raw is not None else None
    if trusted:
        (family.counters.hit if payload is not None else family.counters.miss).inc()
    return payload


def _get(family: KeyFamily, key: str) -> tuple[bool, bytes | None]:
    """GET the key: (True, its value or None) when Redis can be trusted, else (False, None)."""
    counters = family.counters
    target = full_key(key)
    health = TOPOLOGY.health_for(target)
    if not health.ready_for(key):  # a pending key reads the database, and fills nothing
        counters.bypass.inc()
        return False, None
    near = NEAR.begin(family, key)
    try:
        client = redis_client()
        raw = cast("bytes | None", read_command(client, "GET", target))
        if health.needs_sync:
            # The connection was (re)made during that call: sync before trusting what it read.
            if not health.ready_for(key):
                counters.bypass.inc()
                return False, None
            raw = cast("bytes | None", read_command(client, "GET", target))
    except CACHE_ERRORS as exc:
        health.failure(exc, "get")
        counters.error.inc()
        return False, None
    if near is not None:
        NEAR.keep(near, raw)
    return True, raw


def _get_versioned(family: KeyFamily, key: str, parts: dict) -> tuple[bool, bytes | None, bytes | None]:
    """``_get`` for a family with a version key: (True, the value, the version) read together
    when Redis (both keys' nodes in a cluster) can be trusted, else (False, None, None)."""
    assert family.version is not None
    counters = family.counters
    # Both keys as recorded (pending deletes name them without the namespace), with their nodes.
    version_name = family.version.key(**parts)
    target, version = full_key(key), full_key(version_name)
    health = TOPOLOGY.health_for(target)
    checks = {(health, key), (TOPOLOGY.health_for(version), version_name)}
    healths = {node for node, _ in checks}
    if not all(node.ready_for(name) for node, name in checks):  # a pending version key too
        counters.bypass.inc()
        return False, None, None
    try:
        raw, current_version = _read_with_version(target, version)
        if any(node.needs_sync for node in healths):
            # A connection was (re)made during that call: sync before trusting what it read.
            if not all(node.ready_for(name) for node, name in checks):
                counters.bypass.inc()
                return False, None, None
            raw, current_version = _read_with_version(target, version)
    except CACHE_ERRORS as exc:
        health.failure(exc, "get")
        counters.error.inc()
        return False, None, None
    return True, raw, current_version


def _read_with_version(target: str, version: str, client: redis.Redis | None = None) -> tuple[bytes | None, bytes | None]:
    """A value and its version key in one round trip: one MGET, or in a cluster one MGET per slot
    pipelined per node (a node's connection errors reach its breaker on the way)."""
    if TOPOLOGY.cluster:
        values = cluster_client().mget_nonatomic([target, version])
    else:
        values = read_command(client or redis_client(), "MGET", target, version)
    raw, current_version = cast("list[bytes | None]", values)
    return raw, current_version


def _serve(family: KeyFamily, key: str, parts: dict, raw: bytes | None, version: bytes | None = None) -> Payload:
    if raw is not None:
        payload = Payload.unpack(raw)
        if payload is not None and (family.version is None or (version is not None and payload.stamp == version)):
            family.counters.hit.inc()
            return payload
    family.counters.miss.inc()
    return _fill(family, key, parts, version)


def _fill(family: KeyFamily, key: str, parts: dict, version: bytes | None = None) -> Payload:
    if transaction.get_connection().in_atomic_block:
        # What a transaction reads may be its own uncommitted writes: stored, a rollback would
        # leave a value in Redis that never existed. Serve it, do not store it.
        return Payload.of(family.load(**parts))
    # In cluster mode the lease carries its key's hash tag: both live in one slot, so the
    # store script below touches one slot only.
    lease, target = lease_key(key), full_key(key)
    health = TOPOLOGY.health_for(target)
    token = os.urandom(8).hex()
    deadline = time.monotonic() + settings.CACHE_LEASE_WAIT
    delay = 0.0
    try:
        client = redis_client()
        while not client.set(lease, token, nx=True, px=settings.CACHE_LEASE_TTL_MS):
            # Someone else is loading this key: wait for their value rather than query too. A live
            # holder keeps its lease (LEASE_KEEPER), so a slow database does not send every waiter
            # to it; a holder that died lets its lease expire and the next SET NX above takes over.
            delay = min(delay * 2 or 0.002, 0.02)
            HOOKS.lease_wait(delay)
            payload = _look(client, target, family, parts)
            if payload is not None:
                return payload
            if time.monotonic() > deadline:  # the safety net, not the normal path
                return Payload.of(family.load(**parts))
        if delay:
            # We waited: the holder may have stored its value (and dropped its lease) between our
            # last look and our SET NX. Look once more rather than query again.
            payload = _look(client, target, family, parts)
            if payload is not None:
                _quietly(health, RELEASE_LEASE, client, [lease], [token])
                return payload
        if family.version is not None and version is None:
            # The scope has no version yet (a write deleted it): start one before loading, so a
            # write that commits during the load deletes the version this value is stamped with.
            version = version_of(client, version_key(family, parts))
    except CACHE_ERRORS as exc:
        health.failure(exc, "lease")
        return load_once(key, lambda: Payload.of(family.load(**parts)))
    LEASE_KEEPER.hold(client, lease, token)
    try:
        data = family.load(**parts)
        payload = Payload.of(data, stamp=version if family.version is not None else None)
        ttl = family.ttl_for(data)
    except BaseException:  # whatever failed, the lease must not outlive this request
        LEASE_KEEPER.drop(lease)
        _quietly(health, RELEASE_LEASE, client, [lease], [token])
        raise
    LEASE_KEEPER.drop(lease)
    _quietly(health, STORE_IF_LEASED, client, [lease, target], [token, payload.pack(), ttl, _KEEP])
    return payload


def _look(client: redis.Redis, target: str, family: KeyFamily, parts: dict) -> Payload | None:
    """A waiting miss looks for the lease holder's value (with a version key: one built under the
    version its scope holds now)."""
    if family.version is not None:
        raw, version = _read_with_version(target, version_key(family, parts), client)
        payload = Payload.unpack(raw) if raw is not None else None
        payload = payload if current(payload, version) else None
    else:
        raw = cast("bytes | None", client.get(target))
        payload = Payload.unpack(raw) if raw is not None else None
    HOOKS.lease_looked(target, payload is not None)
    return payload


def _quietly(health: CacheHealth, script, client: redis.Redis, keys: list[str], args: list[object]) -> None:
    try:
        script.run(client, keys, args)
    except CACHE_ERRORS as exc:
        health.failure(exc, "set")


@dataclass(slots=True)
class BulkFill:
    """What ``fill_many`` did with each position of its parts list."""

    stored: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # loaded, but an invalidation took our lease first
    missing: list[int] = field(default_factory=list)  # no such row (the loader raises ObjectDoesNotExist)
    rest: list[int] = field(default_factory=list)  # not filled here: for fetch (someone else's lease...)


def fill_many(family: KeyFamily, parts_list: list[Parts], *, client: redis.Redis) -> BulkFill:
    """Fill many keys of a family that has a ``bulk_loader`` (warm-up) under ``fetch``'s lease
    protocol, in one bulk load and two round trips: lease every key (SET NX PX), load the keys
    whose lease we got, then store each value only if our lease is still there
    (``store_if_leased.lua``), so a write that commits and invalidates meanwhile still wins. The
    caller has checked the keys are missing. In cluster mode ``client`` is the one primary that
    holds every key of the batch (each key and its lease share a slot; ops.warm groups by node).
    A key leased by someone else, and every key whenever fetch would not store (layer off, a
    cluster client rather than a node's, inside a transaction, Redis not trusted), is left in
    ``rest`` for fetch. Redis errors raise: ops commands fail loudly."""
    result = BulkFill()
    if (family.bulk_loader is None or not settings.CACHE_LAYER_ENABLED
            or (TOPOLOGY.cluster and type(client) is not redis.Redis)
            or transaction.get_connection().in_atomic_block or not HEALTH.ready()):
        result.rest.extend(range(len(parts_list)))
        return result
    keys = [family.key(**parts) for parts in parts_list]
    if any(PENDING.holds(key) for key in keys):  # fetch reads a pending key from the database
        result.rest.extend(range(len(parts_list)))
        return result
    token = os.urandom(8).hex()  # one for the batch: it only has to tell our leases from others'
    got = pipelined(client, [("SET", lease_key(key), token, "NX", "PX", settings.CACHE_LEASE_TTL_MS) for key in keys])
    leased = [i for i, ok in enumerate(got) if ok]
    result.rest.extend(i for i, ok in enumerate(got) if not ok)
    if not leased:
        return result
    leases = [lease_key(keys[i]) for i in leased]
    try:
        # Each key's version, read (or started) before the load, as fetch does.
        versions = (versions_of(client if not TOPOLOGY.cluster else redis_client(),
                                [version_key(family, parts_list[i]) for i in leased])
                    if family.version is not None else {})
    except BaseException:
        try:
            pipelined(client, [RELEASE_LEASE.command([lease], [token]) for lease in leases])
        except CACHE_ERRORS:  # the leases expire on their own
            pass
        raise
    LEASE_KEEPER.hold_many(client, leases, token)
    family.counters.miss.inc(len(leased))
    try:
        loaded = family.bulk_loader([parts_list[i] for i in leased])
    except BaseException:  # whatever failed, the leases must not outlive this call
        LEASE_KEEPER.drop_many(leases)
        try:
            pipelined(client, [RELEASE_LEASE.command([lease], [token]) for lease in leases])
        except CACHE_ERRORS:  # the leases expire on their own; the load's error is the one to raise
            pass
        raise
    LEASE_KEEPER.drop_many(leases)
    commands: list[tuple[object, ...]] = []
    for at, (i, lease) in enumerate(zip(leased, leases, strict=True)):  # one command per leased key, in order
        if at not in loaded:
            commands.append(RELEASE_LEASE.command([lease], [token]))
            continue
        data = loaded[at]
        stamp = versions[version_key(family, parts_list[i])] if versions else None
        commands.append(STORE_IF_LEASED.command([lease, full_key(keys[i])],
                                                [token, Payload.of(data, stamp=stamp).pack(), family.ttl_for(data), _KEEP]))
    replies = pipelined(client, commands)
    for at, i in enumerate(leased):
        if at not in loaded:
            result.missing.append(i)
        else:
            (result.stored if replies[at] else result.lost).append(i)
    return result
