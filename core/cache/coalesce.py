"""Identical database loads of one key share one query within a process while Redis cannot serve.

When Redis is down or not trusted, every cached read falls back to the database; without this, a
burst of requests for one hot key would each run the same query. Here the callers that arrive
while a load of the key is running wait, and share the *next* load, which one of them starts as
soon as the running one ends.

The coherence rule: a caller only ever takes the result of a load that started after it arrived
(or at the moment it arrived, when it starts the load itself). A load already running when it
arrived may have read the rows before a write that was acknowledged to this caller committed, so
its result is never handed to it. Waits are bounded (``CACHE_LEASE_WAIT``): a caller that waited
that long, or whose shared load failed, loads on its own, as it would with no cache at all.
Never inside a transaction: what it reads may be its own uncommitted writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import transaction

from .payload import Payload


class _Load:
    __slots__ = ("done", "leader", "next", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.leader = False  # someone has started it (it started after every one who waits on it arrived)
        self.result: Payload | None = None  # None once done: it failed
        self.next: _Load | None = None  # shared by those who arrived while this one ran


_lock = threading.Lock()
_running: dict[str, _Load] = {}


def load_once(key: str, load: Callable[[], Payload]) -> Payload:
    """``load()``, shared with the identical loads of ``key`` that start with it in this process."""
    if transaction.get_connection().in_atomic_block:
        return load()
    deadline = time.monotonic() + settings.CACHE_LEASE_WAIT
    with _lock:
        running = _running.get(key)
        if running is None:
            mine = _running[key] = _Load()
            mine.leader = True
        elif running.next is None:  # it started before we arrived: wait for it, share the one after it
            mine = running.next = _Load()
        else:
            mine = running.next
    if running is not None:
        if not running.done.wait(max(0.0, deadline - time.monotonic())):
            return load()
        with _lock:
            lead = not mine.leader
            if lead:  # the first of its waiters to wake starts it; it is registered only now, so a
                mine.leader = True  # load nobody starts (all timed out) never holds the key
                _running.setdefault(key, mine)
        if not lead:
            if not mine.done.wait(max(0.0, deadline - time.monotonic())) or mine.result is None:
                return load()
            return mine.result
    return _lead(key, mine, load)


def _lead(key: str, mine: _Load, load: Callable[[], Payload]) -> Payload:
    try:
        mine.result = load()
        return mine.result
    finally:
        with _lock:
            if _running.get(key) is mine:
                del _running[key]
        mine.done.set()  # its waiters take the result; the next one's waiters start that one
