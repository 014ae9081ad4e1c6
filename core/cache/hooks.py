"""The engine's test hooks: the only places where tests step into the engine.

Production never changes them. A test replaces a hook with ``monkeypatch.setattr(HOOKS, name, f)``
to observe or steer the moments a race needs (a miss waiting for another request's lease), and
drives the lease keeper through ``LEASE_KEEPER`` (``beat()``, ``holds()``), so the engine's modules
can be rearranged without rewriting its tests.
"""

from __future__ import annotations

import time

from .lease import LEASE_KEEPER  # tests drive the keeper: beat(), holds()

__all__ = ["HOOKS", "LEASE_KEEPER", "EngineHooks"]


class EngineHooks:
    def lease_wait(self, delay: float) -> None:
        """A miss waits ``delay`` seconds for the request that holds the key's lease."""
        time.sleep(delay)

    def lease_looked(self, key: str, found: bool) -> None:
        """A waiting miss looked for the lease holder's value (``key`` is the full key)."""

    def pending_rows_read(self, node: str, keys: list[str]) -> None:
        """A sync read these pending invalidations to apply them (``node``: the cluster node
        whose sync it is, "" on one Redis or Sentinel)."""


HOOKS = EngineHooks()

