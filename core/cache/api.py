"""The cache engine's public face: the only module of ``core.cache`` that apps import.

An app declares its key families in its own ``cache.py`` (``KeyFamily``, ``register``), the
receivers that invalidate them beside them (``invalidates``, ``on``, ``connect_receivers``), reads
through ``fetch`` (and ``read_ahead`` for a request's keys together), and writes with
``invalidate`` or ``amend_after_commit``. A fan-out (one write, the values of many keys) names a
``Version`` on its families and invalidates that one key. The HTTP plumbing's /api/health asks
``probe_cache``. Everything else in ``core.cache`` is the engine's own and may be rearranged;
import-linter holds the apps and ``core.http`` to this module (``.importlinter``).
"""

from __future__ import annotations

from .amendment import Amendment, Change, amend_after_commit
from .client import CACHE_ERRORS
from .family import BulkLoader, KeyFamily, Loader, Page, Parts, TtlCap, Version, WarmScope
from .invalidation import invalidate
from .keys import normalize_email
from .ops.warm import WarmResult, warm
from .payload import Payload
from .probe import probe_cache
from .read import fetch, fetch_data, read_ahead, read_if_cached
from .readahead import planned_reads, readahead_of
from .registry import ActivitySource, Trigger, connect_receivers, invalidates, on, register, register_activity

__all__ = [
    "CACHE_ERRORS",
    "ActivitySource",
    "Amendment",
    "BulkLoader",
    "Change",
    "KeyFamily",
    "Loader",
    "Page",
    "Parts",
    "Payload",
    "Trigger",
    "TtlCap",
    "Version",
    "WarmResult",
    "WarmScope",
    "amend_after_commit",
    "connect_receivers",
    "fetch",
    "fetch_data",
    "invalidate",
    "invalidates",
    "normalize_email",
    "on",
    "planned_reads",
    "probe_cache",
    "read_ahead",
    "read_if_cached",
    "readahead_of",
    "register",
    "register_activity",
    "warm",
]
