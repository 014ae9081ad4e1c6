"""Leases a loading request holds on the keys it is about to store, kept alive while it loads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import redis
from django.conf import settings

from .client import CACHE_ERRORS
from .scripts import EXTEND_LEASE


class LeaseKeeper:
    """Extends the leases this process holds while their loads run (every third of the lease TTL),
    so a slow query keeps its lease and the waiters keep waiting for its value. One daemon thread
    per process, idle while nothing is held; a lease of a process that died still expires."""

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

    def holds(self, lease: str) -> bool:
        return lease in self._held

    def beat(self) -> None:
        """Extend every held lease once (the thread's loop body)."""
        with self._cond:
            held = list(self._held.items())
        for lease, (client, token) in held:
            try:
                EXTEND_LEASE.run(client, [lease], [token, settings.CACHE_LEASE_TTL_MS])
            except CACHE_ERRORS:  # the store will fail too and count it; nothing to do here
                pass
        self.beats += 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._held:
                    self._cond.wait()
            time.sleep(settings.CACHE_LEASE_TTL_MS / 3000)
            self.beat()


LEASE_KEEPER = LeaseKeeper()
