"""The cache's part of /api/health: can Redis be used right now, and what its breaker says."""

from __future__ import annotations

import time

from .client import redis_client
from .cluster import probe_nodes
from .health import HEALTH
from .topology import TOPOLOGY


def probe_cache(*, sync: bool) -> tuple[dict, str]:
    """The cache component (``status``: ``up``, ``degraded`` or ``down``, ``latency_ms``, an
    ``error`` when down, and in cluster mode each primary's) and the breaker state to report.
    ``sync``: the database is up, so a Redis that answers may have its breaker closed now (after
    the recorded invalidations are applied) and the state reported is this moment's."""
    if TOPOLOGY.cluster:
        # Per primary: one dead node leaves the others serving, which is "degraded", not "down".
        component = probe_nodes(sync=sync)
        breaker = "open" if any(n["breaker"] == "open" for n in component["nodes"].values()) else HEALTH.state
        return component, breaker
    started = time.perf_counter()
    try:
        if HEALTH.blocking():
            raise ConnectionError("circuit open")
        redis_client().ping()
    except Exception as exc:  # a health check reports failures, it does not raise them
        component = {"status": "down", "error": type(exc).__name__}
    else:
        component = {"status": "up"}
    component["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    if sync and component["status"] == "up":
        # A worker that serves only health checks would otherwise say "open" until its next
        # cached read.
        HEALTH.ready()
    return component, HEALTH.state
