"""One daemon thread per process that learns of pending invalidations recorded anywhere.

Another worker, or another host, that could not delete a key records it in PostgreSQL (pending.py)
and sends ``NOTIFY cache_pending`` from that transaction, with the keys as payload. This thread
LISTENs on its own database connection and adds those keys to this process's pending set
(``pending.PENDING``): they, and only they, are then read from the database until their deletes are
applied. An empty payload (too many keys for one, or a drain removed rows) reloads the set from the
table. It also looks at the table every ``CACHE_PENDING_CHECK`` seconds, in case a notification was
missed (the database restarted, or SQLite, which has no LISTEN): a row count or highest id other
than at the last load reloads the set. And it drains them itself, with a backoff capped at
``CACHE_PENDING_RETRY_MAX``, so an idle worker does not leave them waiting for a request or a TTL;
in a cluster only the nodes that serve a pending key's slot drain (healthy nodes are left alone).

With ``CACHE_PENDING_NOTIFY = "poll"`` it sends no LISTEN: the periodic look alone tells it, within
``CACHE_PENDING_CHECK`` seconds, through the thread's ordinary Django connection, which it gives back
after each look as a request would (``CONN_MAX_AGE``, or Django's connection pool). No session state
is left on the connection, so a transaction-pooling PgBouncer can carry it.

Each look also publishes how many keys are pending (``cache_pending_keys``).
The cached read path itself never runs SQL for this: it looks the key up in a dict.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable

from django.conf import settings

from core import metrics

logger = logging.getLogger("core.cache")


class PendingWatcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()  # why the thread was woken (set with a byte on the pipe)
        # Written by _wakeup so the LISTEN wait, a poll() on the database socket and this pipe,
        # sleeps until something happens instead of waking in slices to look at the event.
        self._pipe = _pipe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.next_retry = 0.0  # monotonic time of the next background drain, 0 = none due
        self._delay = 0.0
        self.listening = False
        self._listening_on = None  # the raw connection LISTEN was sent on
        self.looks = 0  # periodic looks at the table done (tests wait for the first)
        self.waits = 0  # times the thread came out of a wait (tests: an idle watcher sleeps)
        # Whose trust a pending invalidation withdraws: set by health.py (the process's health, and
        # in cluster mode every node's), so this module imports neither.
        self.healths: Callable[[], list] = list

    def ensure_running(self) -> None:
        """Start the thread in this process (lazily: gunicorn workers are forked, threads are not)."""
        if (self._thread is not None and self._pid == os.getpid()) or not settings.CACHE_PENDING_WATCH:
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="cache-pending-watcher", daemon=True)
            self._thread.start()

    def retry_soon(self) -> None:
        """This process recorded pending invalidations: drain them after CACHE_PENDING_RETRY."""
        if not self.next_retry:
            self.next_retry = time.monotonic() + settings.CACHE_PENDING_RETRY
        self.ensure_running()
        self._wakeup()

    def stop(self) -> None:
        """Stop the thread and close its database connection (tests: before the database goes)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wakeup()
        if thread is not threading.current_thread():
            thread.join(timeout=10)
        self._thread = None
        self.next_retry, self._delay = 0.0, 0.0

    def _wakeup(self) -> None:
        """The one way to wake the thread: the event before the byte, so a poll() the byte ends
        finds the event set (a byte alone, left from a wake-up already seen, is just drained)."""
        self._wake.set()
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a wake-up is pending already
            os.write(self._pipe[1], b"\0")

    def _forked(self) -> None:
        """A forked child (gunicorn, prefork worker) must not share the pipe with its parent, whose
        thread reads it. Only the forking thread exists here, so no one else uses the old fds."""
        for fd in self._pipe:
            os.close(fd)
        self._pipe = _pipe()

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        from django.db import connection

        next_check = 0.0
        try:
            while not self._stop.is_set():
                try:
                    until = min(next_check, self.next_retry or next_check)
                    notified = self._listen(connection, timeout=max(0.0, until - time.monotonic()))
                    if self._stop.is_set():
                        break
                    if notified:
                        self._learn(notified)
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + settings.CACHE_PENDING_CHECK
                        self._check(_healths())
                    self._retry(_healths())
                    if polling():
                        connection.close_if_unusable_or_obsolete()  # back to the pool, as after a request
                except Exception as exc:  # the database went away: reconnect on the next round
                    _healths()[0].log.warning(f"watch:{type(exc).__name__}", f"cache pending watcher: {type(exc).__name__}: {exc}")
                    self.listening = False
                    connection.close()
                    self._stop.wait(settings.CACHE_PENDING_CHECK)
        finally:
            self.listening = False
            connection.close()

    def _listen(self, connection, timeout: float) -> list[str]:
        """Wait up to ``timeout`` for a NOTIFY (PostgreSQL) or a local wake-up; the payloads of the
        notifications that came (none on a wake-up or a timeout). The wake-up is cleared only once
        seen, so one made while the thread was busy is not lost."""
        if connection.vendor != "postgresql" or polling():
            self._wake.wait(timeout)
            self.waits += 1
            self._wake.clear()
            return []
        connection.ensure_connection()
        raw = connection.connection
        if not self.listening or self._listening_on is not raw:
            raw.execute(f"LISTEN {_channel()}")
            self._listening_on, self.listening = raw, True
        # One poll() on both fds, with no periodic slices: an idle process spends no CPU here.
        # Before each wait take, without blocking, what psycopg holds: notifications it read during
        # a query (its backlog: the socket stays quiet for them) and what the socket has. A
        # readable socket may carry only part of one (or none): then wait again.
        poller = select.poll()
        poller.register(raw.fileno(), select.POLLIN)
        poller.register(self._pipe[0], select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            notified = [n.payload for n in raw.notifies(timeout=0)]
            remaining = deadline - time.monotonic()
            if notified or self._wake.is_set() or remaining <= 0:
                self._wake.clear()
                return notified
            for fd, _ in poller.poll(remaining * 1000):
                if fd == self._pipe[0]:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(fd, 4096):
                            pass
            self.waits += 1

    def _learn(self, payloads: list[str]) -> None:
        """Notifications: their keys are pending now (an empty payload: reload the set)."""
        from .pending import PENDING, RELOAD, reload_pending_keys

        if RELOAD in payloads:
            reload_pending_keys()
        else:
            PENDING.add(key for payload in payloads for key in payload.split("\n"))
        if PENDING.any() and not self.next_retry:  # another process's record: drain it if still there
            self.next_retry = time.monotonic() + settings.CACHE_PENDING_RETRY

    def _check(self, healths) -> None:
        """The periodic look: reload the pending keys when the table changed since the last load."""
        from .pending import PENDING, reload_pending_keys, table_state

        table = table_state()
        metrics.pending_keys.set(table[0])
        if table != PENDING.table:
            reload_pending_keys(table)  # a missed notification, or rows another process drained
        if PENDING.any():
            if not self.next_retry:
                self.next_retry = time.monotonic() + settings.CACHE_PENDING_RETRY
        else:
            self.next_retry, self._delay = 0.0, 0.0
        self.looks += 1

    def _retry(self, healths) -> None:
        from .pending import PENDING

        if not self.next_retry or time.monotonic() < self.next_retry:
            return
        done = True
        for health in [h for h in healths if h.needs_sync or h.owns_pending()]:
            done = not health.blocking() and health.sync() and done
        if done and not PENDING.any():
            self.next_retry, self._delay = 0.0, 0.0
            return
        cap = max(settings.CACHE_PENDING_RETRY, settings.CACHE_PENDING_RETRY_MAX)
        self._delay = min(max(self._delay * 2, settings.CACHE_PENDING_RETRY), cap)
        self.next_retry = time.monotonic() + self._delay


def _pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    return read, write


def polling() -> bool:
    """True when the watcher polls the table instead of LISTENing (CACHE_PENDING_NOTIFY)."""
    return settings.CACHE_PENDING_NOTIFY == "poll"


def _healths() -> list:
    return _WATCHER.healths()


def _channel() -> str:
    from .pending import CHANNEL

    return CHANNEL


_WATCHER = PendingWatcher()
os.register_at_fork(after_in_child=_WATCHER._forked)


def watcher() -> PendingWatcher:
    return _WATCHER
