"""Amendment: a write stores the value its commit made, instead of deleting the key.

``amend_after_commit`` wraps a write whose new cached value follows from the old one and what
it wrote (a chat message appended, a usage count, a balance it returned). The next read then
hits rather than loading from the database again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from .client import CACHE_ERRORS, full_key, lease_key, pipelined, redis_client, unlink_commands
from .family import KeyFamily, Parts
from .health import HEALTH
from .invalidation import TAKEN_OVER, defer
from .payload import Payload
from .replication import pipelined_confirmed
from .scripts import LEASE_IF_CACHED, RELEASE_LEASE, STORE_IF_LEASED
from .topology import TOPOLOGY

_DELETE_IF_LOST = "1"  # store_if_leased.lua: on a lost lease the key goes too, as any invalidation

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


@contextmanager
def amend_after_commit(*targets: tuple[KeyFamily, Parts]) -> Iterator[tuple[Amendment, ...]]:
    """Around a write's transaction, for keys whose new value the write can work out from their
    cached value and what it wrote: after commit the key holds the new value instead of being
    deleted.

    On entry each key gets a lease (SET NX) and its cached value is read, one round trip. Inside
    the block, invalidations of these keys are taken over by the amendment: the write names its
    changes with ``Amendment.change``, and they must cover everything its transaction did to the
    key. After commit one script stores the changed value if our lease is still there (no other
    commit's invalidation has run since we read the value: the lease protocol of ``fetch``), and
    deletes the key otherwise. A key not cached, a lease someone else holds, a Redis that cannot
    be trusted, cluster mode, or an error on entry: the key is simply invalidated after commit."""
    amendments = tuple(Amendment(family, family.key(**parts)) for family, parts in targets)
    if TAKEN_OVER.keys:
        # Nested: the outer block's amendment takes the changes of a key it holds; any other key
        # is invalidated as usual (its changes are ignored).
        yield tuple(TAKEN_OVER.keys.get(amendment.key, amendment) for amendment in amendments)
        return
    if not amendments or not _lease_and_read(amendments):  # invalidations go their usual way
        yield amendments
        return
    TAKEN_OVER.keys = {a.key: a for a in amendments}
    try:
        yield amendments
    except BaseException:
        _release(amendments)
        raise
    finally:
        TAKEN_OVER.keys = {}

    def store_amended() -> None:
        _amend_now(amendments)

    transaction.on_commit(store_amended, robust=True)


def _lease_and_read(amendments: tuple[Amendment, ...]) -> bool:
    """Lease and read every key in one round trip; False when Redis cannot be used for this."""
    if not settings.CACHE_LAYER_ENABLED or TOPOLOGY.cluster or not HEALTH.ready():
        return False
    tokens = [os.urandom(8).hex() for _ in amendments]
    try:
        replies = pipelined(redis_client(), [
            LEASE_IF_CACHED.command([lease_key(amendment.key), full_key(amendment.key)],
                                    [token, settings.CACHE_LEASE_TTL_MS])
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
        pipelined(redis_client(), [RELEASE_LEASE.command([lease_key(a.key)], [a.token]) for a in held])
    except CACHE_ERRORS as exc:  # the leases expire on their own
        HEALTH.failure(exc, "lease")


def _amend_now(amendments: tuple[Amendment, ...]) -> None:
    if HEALTH.blocking():
        defer(HEALTH, tuple((a.family, a.key) for a in amendments))
        return
    commands: list[tuple[object, ...]] = []
    outcomes, deletes = [], []
    for amendment in amendments:
        token = amendment.token
        data = amendment.new_value() if token is not None else None
        if token is None or data is None:
            deletes.append(amendment.key)
            outcomes.append(amendment.family.counters.deleted)
            continue
        commands.append(STORE_IF_LEASED.command(
            [lease_key(amendment.key), full_key(amendment.key)],
            [token, Payload.of(data).pack(), amendment.family.ttl_for(data), _DELETE_IF_LOST]))
        outcomes.append(amendment.family.counters.amended)
    try:
        # As any invalidation: the key and its lease, confirmed by replicas when asked for.
        pipelined_confirmed(redis_client(), [*commands, *unlink_commands(deletes)])
    except CACHE_ERRORS as exc:
        HEALTH.failure(exc, "delete")
        defer(HEALTH, tuple((a.family, a.key) for a in amendments))
        return
    for counter in outcomes:
        counter.inc()
