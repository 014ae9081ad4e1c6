"""Read-through caching of JSON bodies with leases, and invalidation after commit.

Read (``fetch``): GET the key; on a hit return the stored body untouched. On a miss take a short
lease (``SET lease:<key> <token> NX PX``), build the value from the database, then store it only
if the lease is still ours (one Lua compare-and-set). Invalidation deletes the key *and* its lease,
so a reader that loaded the old row before a write committed can no longer store it (the stale-set
race). Requests that miss while another holds the lease wait briefly for its value instead of
querying too (single flight). Losing a lease to eviction costs a miss, never a stale value.
Warm-up fills a batch of keys the same way (``fill_many``): leases, one bulk load, the same
compare-and-set per key.

Invalidation (``invalidate``) runs after the transaction commits. A delete that cannot reach Redis
is recorded in ``core.PendingInvalidation`` and applied before cached reads are trusted again.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis
from django.conf import settings
from django.db import transaction

from .client import CACHE_ERRORS, full_key, lease_key, pipelined, read_command, redis_client, unlink_keys
from .cluster import cluster_client, health_for
from .family import KeyFamily, Parts
from .health import HEALTH, CacheHealth
from .pending import record_pending_invalidations
from .replication import execute_confirmed

_HEAD = b'{"etag":"'
_MID = b'","data":'
_ETAG_LEN = 16
_BODY_START = len(_HEAD) + _ETAG_LEN + len(_MID)

# Store the value only if our lease is still there: an invalidation in between deleted it.
_POPULATE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Payload:
    """A JSON response body and its ETag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, data: object) -> Payload:
        body = orjson.dumps(data)
        return cls(body, hashlib.blake2b(body, digest_size=_ETAG_LEN // 2).hexdigest())

    def data(self):
        return orjson.loads(self.body)

    def pack(self) -> bytes:
        return b"".join((_HEAD, self.etag.encode(), _MID, self.body, b"}"))

    @classmethod
    def unpack(cls, raw: bytes) -> Payload | None:
        if raw[: len(_HEAD)] != _HEAD or raw[_BODY_START - len(_MID) : _BODY_START] != _MID or raw[-1:] != b"}":
            return None
        return cls(raw[_BODY_START:-1], raw[len(_HEAD) : len(_HEAD) + _ETAG_LEN].decode())


class _Scripts:
    """Lua scripts bound to the current client (re-registered if the client changes)."""

    def __init__(self) -> None:
        self._client = None

    def get(self, client):
        if client is not self._client:
            self.populate = client.register_script(_POPULATE)
            self.release = client.register_script(_RELEASE)
            self._client = client
        return self


_scripts = _Scripts()


def read_ahead(*targets: tuple[KeyFamily, Parts]) -> dict[str, bytes | None]:
    """Read several keys in one round trip (MGET), for ``fetch(..., readahead=...)`` to use:
    authentication reads the user's key and the endpoint's key together. Empty when Redis cannot
    be trusted right now; fetch then takes its usual path. In cluster mode: one MGET per slot,
    pipelined per node, skipping the keys whose node cannot be trusted now."""
    if not settings.CACHE_LAYER_ENABLED:
        return {}
    if settings.REDIS_CLUSTER_NODES:
        return _read_ahead_cluster([family.key(**parts) for family, parts in targets])
    if not HEALTH.ready():
        return {}
    keys = [family.key(**parts) for family, parts in targets]
    try:
        values = read_command(redis_client(), "MGET", *(full_key(k) for k in keys))
    except CACHE_ERRORS as exc:
        HEALTH.failure(exc, "get")
        return {}
    if HEALTH.needs_sync:  # the connection was (re)made during the call: fetch syncs first
        return {}
    return dict(zip(keys, cast("list[bytes | None]", values), strict=True))


def _read_ahead_cluster(keys: list[str]) -> dict[str, bytes | None]:
    healths = {key: health_for(full_key(key)) for key in keys}
    keys = [key for key in keys if healths[key].ready()]
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
    if readahead and key in readahead:
        return _serve(family, key, parts, readahead.pop(key))
    trusted, raw = _get(family, key)
    if not trusted:
        return Payload.of(family.load(**parts))
    return _serve(family, key, parts, raw)


def peek(family: KeyFamily, /, **parts: object) -> Payload | None:
    """The family's cached value for these parts, or None when it is not cached or Redis cannot be
    trusted right now. Never loads: for a write that can check the same thing in its own
    statement instead (subscriptions.services.usage_consume)."""
    if not settings.CACHE_LAYER_ENABLED:
        return None
    trusted, raw = _get(family, family.key(**parts))
    payload = Payload.unpack(raw) if raw is not None else None
    if trusted:
        (family.counters.hit if payload is not None else family.counters.miss).inc()
    return payload


def _get(family: KeyFamily, key: str) -> tuple[bool, bytes | None]:
    """GET the key: (True, its value or None) when Redis can be trusted, else (False, None)."""
    counters = family.counters
    target = full_key(key)
    health = health_for(target)
    if not health.ready():
        counters.bypass.inc()
        return False, None
    try:
        client = redis_client()
        raw = cast("bytes | None", read_command(client, "GET", target))
        if health.needs_sync:
            # The connection was (re)made during that call: sync before trusting what it read.
            if not health.ready():
                counters.bypass.inc()
                return False, None
            raw = cast("bytes | None", read_command(client, "GET", target))
    except CACHE_ERRORS as exc:
        health.failure(exc, "get")
        counters.error.inc()
        return False, None
    return True, raw


def _serve(family: KeyFamily, key: str, parts: dict, raw: bytes | None) -> Payload:
    if raw is not None:
        payload = Payload.unpack(raw)
        if payload is not None:
            family.counters.hit.inc()
            return payload
    family.counters.miss.inc()
    return _fill(family, key, parts)


def fetch_data(family: KeyFamily, /, **parts: object):
    return fetch(family, None, **parts).data()


def _fill(family: KeyFamily, key: str, parts: dict) -> Payload:
    if transaction.get_connection().in_atomic_block:
        # What a transaction reads may be its own uncommitted writes: stored, a rollback would
        # leave a value in Redis that never existed. Serve it, do not store it.
        return Payload.of(family.load(**parts))
    # In cluster mode the lease carries its key's hash tag: both live in one slot, so the
    # populate script below touches one slot only.
    lease, target = lease_key(key), full_key(key)
    health = health_for(target)
    token = os.urandom(8).hex()
    deadline = time.monotonic() + settings.CACHE_LEASE_WAIT
    delay = 0.0
    try:
        client = redis_client()
        scripts = _scripts.get(client)
        while not client.set(lease, token, nx=True, px=settings.CACHE_LEASE_TTL_MS):
            # Someone else is loading this key: wait for their value rather than query too. A live
            # holder keeps its lease (_KEEPER), so a slow database does not send every waiter to
            # it; a holder that died lets its lease expire and the next SET NX above takes over.
            delay = min(delay * 2 or 0.002, 0.02)
            _pause(delay)
            payload = _cached(client, target)
            if payload is not None:
                return payload
            if time.monotonic() > deadline:  # the safety net, not the normal path
                return Payload.of(family.load(**parts))
        if delay:
            # We waited: the holder may have stored its value (and dropped its lease) between our
            # last look and our SET NX. Look once more rather than query again.
            payload = _cached(client, target)
            if payload is not None:
                _quietly(health, scripts.release, keys=[lease], args=[token])
                return payload
    except CACHE_ERRORS as exc:
        health.failure(exc, "lease")
        return Payload.of(family.load(**parts))
    _KEEPER.hold(client, lease, token)
    try:
        data = family.load(**parts)
        payload = Payload.of(data)
        ttl = family.ttl_for(data)
    except BaseException:  # whatever failed, the lease must not outlive this request
        _KEEPER.drop(lease)
        _quietly(health, scripts.release, keys=[lease], args=[token])
        raise
    _KEEPER.drop(lease)
    _quietly(health, scripts.populate, keys=[lease, target], args=[token, payload.pack(), ttl])
    return payload


@dataclass(slots=True)
class BulkFill:
    """What ``fill_many`` did with each position of its parts list."""

    stored: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # loaded, but an invalidation took our lease first
    missing: list[int] = field(default_factory=list)  # no such row (the loader raises ObjectDoesNotExist)
    rest: list[int] = field(default_factory=list)  # not filled here: for fetch (someone else's lease...)


def fill_many(family: KeyFamily, parts_list: list[Parts], *, client: redis.Redis) -> BulkFill:
    """Fill many keys of a family that has a ``bulk_loader`` (warm-up) under ``_fill``'s lease
    protocol, in one bulk load and three round trips (and a SCRIPT LOAD): lease every key (SET NX
    PX), load the keys whose lease we got, then store each value only if our lease is still there
    (the populate script), so a write that commits and invalidates meanwhile still wins. The
    caller has checked the keys are missing. In cluster mode ``client`` is the one primary that
    holds every key of the batch (each key and its lease share a slot; ops.warm groups by node).
    A key leased by someone else, and every key whenever fetch would not store (layer off, a
    cluster client rather than a node's, inside a transaction, Redis not trusted), is left in
    ``rest`` for fetch. Redis errors raise: ops commands fail loudly."""
    result = BulkFill()
    if (family.bulk_loader is None or not settings.CACHE_LAYER_ENABLED
            or (settings.REDIS_CLUSTER_NODES and type(client) is not redis.Redis)
            or transaction.get_connection().in_atomic_block or not HEALTH.ready()):
        result.rest.extend(range(len(parts_list)))
        return result
    keys = [family.key(**parts) for parts in parts_list]
    token = os.urandom(8).hex()  # one for the batch: it only has to tell our leases from others'
    got = pipelined(client, [("SET", lease_key(key), token, "NX", "PX", settings.CACHE_LEASE_TTL_MS) for key in keys])
    leased = [i for i, ok in enumerate(got) if ok]
    result.rest.extend(i for i, ok in enumerate(got) if not ok)
    if not leased:
        return result
    leases = [lease_key(keys[i]) for i in leased]
    _KEEPER.hold_many(client, leases, token)
    family.counters.miss.inc(len(leased))
    try:
        loaded = family.bulk_loader([parts_list[i] for i in leased])
    except BaseException:  # whatever failed, the leases must not outlive this call
        _KEEPER.drop_many(leases)
        try:
            pipelined(client, [("EVAL", _RELEASE, 1, lease, token) for lease in leases])
        except CACHE_ERRORS:  # the leases expire on their own; the load's error is the one to raise
            pass
        raise
    _KEEPER.drop_many(leases)
    populate = client.script_load(_POPULATE)  # its sha; loaded again in case Redis lost it
    commands: list[tuple[object, ...]] = []
    for at, (i, lease) in enumerate(zip(leased, leases, strict=True)):  # one command per leased key, in order
        if at not in loaded:
            commands.append(("EVAL", _RELEASE, 1, lease, token))
            continue
        data = loaded[at]
        commands.append(("EVALSHA", populate, 2, lease, full_key(keys[i]), token, Payload.of(data).pack(),
                         family.ttl_for(data)))
    replies = pipelined(client, commands)
    for at, i in enumerate(leased):
        if at not in loaded:
            result.missing.append(i)
        else:
            (result.stored if replies[at] else result.lost).append(i)
    return result


def _cached(client: redis.Redis, target: str) -> Payload | None:
    raw = cast("bytes | None", client.get(target))
    return Payload.unpack(raw) if raw is not None else None


_pause = time.sleep  # a seam: tests observe who is waiting


class _LeaseKeeper:
    """Extends the leases this process holds while their loads run (every third of the lease TTL),
    so a slow query keeps its lease and the waiters keep waiting for its value. One daemon thread
    per process, idle while nothing is held; a lease of a process that died still expires."""

    _EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

    def __init__(self) -> None:
        self._held: dict[str, tuple[redis.Redis, str]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.beats = 0

    def hold(self, client: redis.Redis, lease: str, token: str) -> None:
        self.hold_many(client, (lease,), token)

    def hold_many(self, client: redis.Redis, leases: Iterable[str], token: str) -> None:
        with self._cond:
            self._held.update((lease, (client, token)) for lease in leases)
            if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
                self._thread = threading.Thread(target=self._run, name="cache-lease-keeper", daemon=True)
                self._thread.start()
            self._cond.notify()

    def drop(self, lease: str) -> None:
        self.drop_many((lease,))

    def drop_many(self, leases: Iterable[str]) -> None:
        with self._cond:
            for lease in leases:
                self._held.pop(lease, None)

    def beat(self) -> None:
        """Extend every held lease once (the thread's loop body)."""
        with self._cond:
            held = list(self._held.items())
        for lease, (client, token) in held:
            try:
                client.eval(self._EXTEND, 1, lease, token, settings.CACHE_LEASE_TTL_MS)
            except CACHE_ERRORS:  # the populate will fail too and count it; nothing to do here
                pass
        self.beats += 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._held:
                    self._cond.wait()
            time.sleep(settings.CACHE_LEASE_TTL_MS / 3000)
            self.beat()


_KEEPER = _LeaseKeeper()


def _quietly(health: CacheHealth, script, **kwargs) -> None:
    try:
        script(**kwargs)
    except CACHE_ERRORS as exc:
        health.failure(exc, "set")


# --- invalidation ------------------------------------------------------------------------------


def invalidate(*targets: tuple[KeyFamily, Parts]) -> None:
    """Delete these keys once the current transaction commits (at once outside a transaction).

    ``targets`` are ``(family, parts)`` pairs. A rollback discards the delete; a failing Redis
    never fails the committed write: the keys are recorded and deleted later.
    """
    if not settings.CACHE_LAYER_ENABLED:
        return
    keys = tuple((family, family.key(**parts)) for family, parts in targets)
    amending_now = _AMENDING.open
    if amending_now:  # the open amendment's commit stores the new value, or deletes (below)
        keys = tuple((family, key) for family, key in keys if key not in amending_now)
    if not keys:
        return

    def delete_cached_keys() -> None:
        _delete_now(keys)

    transaction.on_commit(delete_cached_keys, robust=True)


def _delete_now(keys: tuple[tuple[KeyFamily, str], ...]) -> None:
    if not settings.REDIS_CLUSTER_NODES:
        _delete_on(HEALTH, keys)
        return
    # Cluster: each node's keys on their own, so a node that is down defers only its keys.
    by_node: dict[CacheHealth, list[tuple[KeyFamily, str]]] = {}
    for family, key in keys:
        by_node.setdefault(health_for(full_key(key)), []).append((family, key))
    for health, group in by_node.items():
        _delete_on(health, tuple(group))


def _delete_on(health: CacheHealth, keys: tuple[tuple[KeyFamily, str], ...]) -> None:
    names = [key for _, key in keys]
    if health.blocking():
        _defer(health, keys)
        return
    try:
        health.unlink(names)
    except CACHE_ERRORS as exc:
        health.failure(exc, "delete")
        _defer(health, keys)
        return
    for family, _ in keys:
        family.counters.deleted.inc()


def _defer(health: CacheHealth, keys: tuple[tuple[KeyFamily, str], ...]) -> None:
    record_pending_invalidations(key for _, key in keys)
    health.mark_unsynced()
    for family, _ in keys:
        family.counters.deferred.inc()


# --- amendment: a write stores the value its commit made, instead of deleting the key ----------

# After commit: our lease still there means no other commit touched the key since we read its
# value, so the old value plus our own change is the value now. Otherwise delete, as any
# invalidation does.
_AMEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('DEL', KEYS[2], KEYS[1])
return 0
"""

# Before the write: lease a key only if it is cached (a key that is not has nothing to amend, and
# a lease on it would only make its readers wait); the value comes back with the lease.
_LEASE_CACHED = """
local value = redis.call('GET', KEYS[2])
if value and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return value end
return false
"""

Change = Callable[[Any], Any]


@dataclass(slots=True)
class Amendment:
    """One key a write amends: its value when the write began, and the changes the write made."""

    family: KeyFamily
    key: str
    token: str | None = None  # our lease's token; None: not amendable, the commit deletes the key
    old: Any = None
    changes: list[Change] = field(default_factory=list)

    def change(self, change: Change) -> None:
        """``change(value) -> value``, applied at commit in the order given; one that returns
        None gives up (the key is deleted, as without an amendment)."""
        self.changes.append(change)

    def new_value(self) -> Any:
        data = self.old
        for change in self.changes:
            if data is None:
                return None
            data = change(data)
        return data if self.changes else None


class _Amending(threading.local):
    open: dict[str, Amendment] = {}  # noqa: RUF012  (per thread: threading.local)


_AMENDING = _Amending()


@contextmanager
def amending(*targets: tuple[KeyFamily, Parts]) -> Iterator[tuple[Amendment, ...]]:
    """Around a write's transaction, for keys whose new value the write can work out from their
    cached value and what it wrote (a new chat message, a usage count, a balance it returned):
    after commit the key holds the new value instead of being deleted, so the next read hits
    rather than loading from the database again.

    On entry each key gets a lease (SET NX) and its cached value is read, one round trip. Inside
    the block, invalidations of these keys are taken over by the amendment: the write names its
    changes with ``Amendment.change``, and they must cover everything its transaction did to the
    key. After commit one script stores the changed value if our lease is still there (no other
    commit's invalidation has run since we read the value: the lease protocol of ``fetch``), and
    deletes the key otherwise. A key not cached, a lease someone else holds, a Redis that cannot
    be trusted, cluster mode, or an error on entry: the key is simply invalidated after commit."""
    amendments = tuple(Amendment(family, family.key(**parts)) for family, parts in targets)
    if _AMENDING.open:
        # Nested: the outer block's amendment takes the changes of a key it holds; any other key
        # is invalidated as usual (its changes are ignored).
        yield tuple(_AMENDING.open.get(amendment.key, amendment) for amendment in amendments)
        return
    if not amendments or not _lease_and_read(amendments):  # invalidations go their usual way
        yield amendments
        return
    _AMENDING.open = {a.key: a for a in amendments}
    try:
        yield amendments
    except BaseException:
        _release(amendments)
        raise
    finally:
        _AMENDING.open = {}

    def store_amended() -> None:
        _amend_now(amendments)

    transaction.on_commit(store_amended, robust=True)


def _lease_and_read(amendments: tuple[Amendment, ...]) -> bool:
    """Lease and read every key in one round trip; False when Redis cannot be used for this."""
    if not settings.CACHE_LAYER_ENABLED or settings.REDIS_CLUSTER_NODES or not HEALTH.ready():
        return False
    tokens = [os.urandom(8).hex() for _ in amendments]
    try:
        replies = pipelined(redis_client(), [
            ("EVAL", _LEASE_CACHED, 2, lease_key(amendment.key), full_key(amendment.key), token,
             settings.CACHE_LEASE_TTL_MS)
            for amendment, token in zip(amendments, tokens, strict=True)])
    except CACHE_ERRORS as exc:
        HEALTH.failure(exc, "lease")
        return False
    for amendment, token, raw in zip(amendments, tokens, replies, strict=True):
        payload = Payload.unpack(raw) if raw is not None else None
        if payload is not None:
            amendment.token, amendment.old = token, payload.data()
    if HEALTH.needs_sync:  # the connection was (re)made: what it read may predate a pending delete
        for amendment in amendments:
            amendment.old = None  # (its lease, if taken, goes with the delete at commit)
    return True


def _release(amendments: tuple[Amendment, ...]) -> None:
    """The write failed: nothing changed, give the leases back."""
    held = [a for a in amendments if a.token is not None]
    if not held:
        return
    try:
        pipelined(redis_client(), [("EVAL", _RELEASE, 1, lease_key(a.key), a.token) for a in held])
    except CACHE_ERRORS as exc:  # the leases expire on their own
        HEALTH.failure(exc, "lease")


def _amend_now(amendments: tuple[Amendment, ...]) -> None:
    if HEALTH.blocking():
        _defer(HEALTH, tuple((a.family, a.key) for a in amendments))
        return
    outcomes, deletes = [], []
    try:
        pipe = redis_client().pipeline(transaction=False)
        for amendment in amendments:
            token = amendment.token
            data = amendment.new_value() if token is not None else None
            if token is None or data is None:
                deletes.append(amendment.key)
                outcomes.append(amendment.family.counters.deleted)
                continue
            pipe.eval(_AMEND, 2, lease_key(amendment.key), full_key(amendment.key), token,
                      Payload.of(data).pack(), amendment.family.ttl_for(data))
            outcomes.append(amendment.family.counters.amended)
        unlink_keys(pipe, deletes)  # as any invalidation: the key and its lease
        execute_confirmed(pipe)
    except CACHE_ERRORS as exc:
        HEALTH.failure(exc, "delete")
        _defer(HEALTH, tuple((a.family, a.key) for a in amendments))
        return
    for counter in outcomes:
        counter.inc()
