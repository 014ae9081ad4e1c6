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
from .health import HEALTH, CacheHealth
from .invalidation import TAKEN_OVER, defer
from .payload import Payload
from .pending import PENDING
from .replication import pipelined_confirmed
from .scripts import APPEND_TO_PAGE, LEASE_IF_CACHED, LEASE_IF_PRESENT, RELEASE_LEASE, STORE_IF_LEASED
from .topology import TOPOLOGY

_DELETE_IF_LOST = "1"  # store_if_leased.lua: on a lost lease the key goes too, as any invalidation

Change = Callable[[Any], Any]


@dataclass(slots=True)
class Amendment:
    """One key a write amends: its value when the write began, and the changes the write made."""

    family: KeyFamily
    key: str
    health: CacheHealth = HEALTH  # of the key's node in a cluster
    token: str | None = None  # our lease's token; None: not amendable, the commit deletes the key
    old: Any = None  # the cached value; never read for a family whose value is a Page
    stamp: bytes | None = None  # the version the cached value was built under: the amended one keeps it
    changes: list[Change] = field(default_factory=list)
    appended: list[tuple[int, bytes]] = field(default_factory=list)

    def change(self, change: Change) -> None:
        """``change(value) -> value``, applied at commit in the order given; one that returns
        None gives up (the key is deleted, as without an amendment)."""
        self.changes.append(change)

    def append(self, item: bytes, *, order: int) -> None:
        """For a family whose value is a ``Page``: this item (its JSON, as the loader would write
        it) goes in its place by ``order`` (mostly the page's end), inside Redis, at commit. An item
        already on the page, or a value of another shape, deletes the key instead."""
        self.appended.append((order, item))

    def new_value(self) -> Any:
        if self.family.page is not None:
            return None  # amended inside Redis (append_to_page.lua), or deleted
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
    deletes the key otherwise. A family whose value is a ``Page`` is leased but not read: its
    items go in with ``Amendment.append`` and Redis appends them where the page lies. In a cluster
    each node's keys go in their own batch (a user's keys share a slot). A key not cached, a lease
    someone else holds, a Redis (node) that cannot be trusted, or an error on entry: the key is
    simply invalidated after commit."""
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
    """Lease and read every key, one round trip per Redis node (in a cluster a user's keys share a
    slot, so one); False when Redis cannot be used for this. A Page's value is only leased, never
    read: Redis amends it where it lies."""
    if not settings.CACHE_LAYER_ENABLED or not HEALTH.ready():
        return False
    if TOPOLOGY.cluster:
        try:
            for amendment in amendments:
                amendment.health = TOPOLOGY.health_for(full_key(amendment.key))
        except CACHE_ERRORS as exc:
            HEALTH.failure(exc, "lease")
            return False
    for health, group in _by_node(amendments).items():
        if not health.ready():
            continue  # these keys are invalidated at commit, as without an amendment
        group = [amendment for amendment in group if not PENDING.holds(amendment.key)]  # likewise
        if not group:
            continue
        tokens = [os.urandom(8).hex() for _ in group]
        try:
            replies = pipelined(_client_of(health), [
                (LEASE_IF_PRESENT if amendment.family.page is not None else LEASE_IF_CACHED).command(
                    [lease_key(amendment.key), full_key(amendment.key)], [token, settings.CACHE_LEASE_TTL_MS])
                for amendment, token in zip(group, tokens, strict=True)])
        except CACHE_ERRORS as exc:
            health.failure(exc, "lease")
            continue
        if health.needs_sync:  # the connection was (re)made: what it read may predate a pending delete
            continue  # (a lease taken goes with the delete at commit)
        for amendment, token, reply in zip(group, tokens, replies, strict=True):
            if amendment.family.page is not None:
                amendment.token = token if reply == 1 else None
                continue
            payload = Payload.unpack(reply) if reply is not None else None
            if payload is not None:
                amendment.token, amendment.old, amendment.stamp = token, payload.data(), payload.stamp
    return True


def _by_node(amendments: tuple[Amendment, ...]) -> dict[CacheHealth, list[Amendment]]:
    groups: dict[CacheHealth, list[Amendment]] = {}
    for amendment in amendments:
        groups.setdefault(amendment.health, []).append(amendment)
    return groups


def _client_of(health: CacheHealth):
    """The node's own connection in a cluster (its keys' commands in one batch), else the client."""
    return health.client() if TOPOLOGY.cluster else redis_client()


def _release(amendments: tuple[Amendment, ...]) -> None:
    """The write failed: nothing changed, give the leases back."""
    for health, group in _by_node(tuple(a for a in amendments if a.token is not None)).items():
        try:
            pipelined(_client_of(health), [RELEASE_LEASE.command([lease_key(a.key)], [a.token]) for a in group])
        except CACHE_ERRORS as exc:  # the leases expire on their own
            health.failure(exc, "lease")


def _amend_now(amendments: tuple[Amendment, ...]) -> None:
    for health, group in _by_node(amendments).items():
        _amend_on(health, group)


def _amend_on(health: CacheHealth, amendments: list[Amendment]) -> None:
    if health.blocking():
        defer(health, tuple((a.family, a.key) for a in amendments))
        return
    commands: list[tuple[object, ...]] = []
    amended, deletes = [], []
    for amendment in amendments:
        token, page = amendment.token, amendment.family.page
        if token is not None and page is not None and amendment.appended and not amendment.changes:
            commands.append(APPEND_TO_PAGE.command(
                [lease_key(amendment.key), full_key(amendment.key)],
                [token, amendment.family.ttl, page.cap, page.items, page.order,
                 *(part for order, item in amendment.appended for part in (order, item))]))
            amended.append(amendment)
            continue
        data = amendment.new_value() if token is not None else None
        if token is None or data is None:
            deletes.append(amendment)
            continue
        commands.append(STORE_IF_LEASED.command(
            [lease_key(amendment.key), full_key(amendment.key)],
            [token, Payload.of(data, stamp=amendment.stamp).pack(), amendment.family.ttl_for(data), _DELETE_IF_LOST]))
        amended.append(amendment)
    try:
        # As any invalidation: the key and its lease, confirmed by replicas when asked for.
        # In a cluster a DEL per key (a key and its lease share a slot; a node's keys may not).
        unlinks = ([command for a in deletes for command in unlink_commands([a.key])] if TOPOLOGY.cluster
                   else unlink_commands([a.key for a in deletes]))
        replies = pipelined_confirmed(_client_of(health), [*commands, *unlinks])
    except CACHE_ERRORS as exc:
        health.failure(exc, "delete")
        defer(health, tuple((a.family, a.key) for a in amendments))
        return
    for amendment, reply in zip(amended, replies, strict=False):
        (amendment.family.counters.amended if reply == 1 else amendment.family.counters.deleted).inc()
    for amendment in deletes:
        amendment.family.counters.deleted.inc()
