"""A key family: one key template, its TTL, how its value is built, and how warm/verify find it.

Each domain app declares its families in its own ``cache.py``, beside the receivers that
invalidate them, and registers them in ``AppConfig.ready()`` (see ``core.cache.registry``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from django.conf import settings

from core import metrics

from .keys import key_part

_FIELD = re.compile(r"\{(\w+)\}")

Parts = dict[str, Any]
# Who is active: warm-up fills per-user keys of these users only.
Loader = Callable[..., Any]
TtlCap = Callable[[Any], float | None]
Enumerator = Callable[["WarmScope"], Iterable[Parts]]


@dataclass(frozen=True)
class WarmScope:
    """What a warm-up covers: the shared families in full, and per-user keys of these users."""

    user_ids: tuple[int, ...] = ()
    since: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class KeyFamily:
    name: str
    template: str
    ttl_setting: str
    default_ttl: int
    loader: Loader  # builds the value (plain JSON-able data) from the database
    holds: str
    shared: bool = False  # the same value for every user (ETag) rather than per user (private)
    ttl_cap: TtlCap | None = None  # f(data) -> seconds the value may live at most
    enumerate: Enumerator | None = None  # the parts warm-up fills; None: the one key with no parts
    invalidated_by: list[str] = field(default_factory=list, compare=False)  # filled by @invalidates

    def ttl_for(self, data: Any) -> int:
        """The TTL to store this value with: the family's, or less if its cap says so. A cap of
        None (nothing to cap by) or a non-finite one leaves the family's TTL; never below 1 s."""
        ttl = self.ttl
        if self.ttl_cap is None:
            return ttl
        cap = self.ttl_cap(data)
        if cap is None or not math.isfinite(cap):
            return ttl
        return max(1, min(ttl, int(cap)))

    @property
    def ttl(self) -> int:
        return int(getattr(settings, self.ttl_setting, self.default_ttl))

    @cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(_FIELD.findall(self.template))

    def key(self, **parts: object) -> str:
        if set(parts) != set(self.fields):
            raise TypeError(f"{self.name} needs {self.fields}, got {tuple(parts)}")
        return self.template.format(**{name: key_part(value) for name, value in parts.items()})

    def parts_from(self, values: dict[str, object], sources: dict[str, str] | None = None) -> Parts:
        """This family's parts picked by name from a wider mapping (user id plus URL kwargs);
        ``sources`` renames a part whose value comes under another name."""
        sources = sources or {}
        return {name: values[sources.get(name, name)] for name in self.fields}

    def read_as(self, **sources: str) -> tuple[KeyFamily, dict[str, str]]:
        """For a view's ``cache_reads``: this family with parts taken from other URL kwargs
        (``CHARACTER.read_as(name="character")``)."""
        unknown = set(sources) - set(self.fields)
        if unknown:
            raise TypeError(f"{self.name} has no part {sorted(unknown)}")
        return (self, sources)

    @property
    def pattern(self) -> str:
        """SCAN pattern that matches this family's keys and no other family's."""
        return _FIELD.sub("*", self.template)

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        pieces = _FIELD.split(self.template)  # literal, field, literal, field, ...
        return re.compile(
            "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^:]+)" for i, p in enumerate(pieces)) + r"\Z"
        )

    def parts_of(self, key: str) -> dict[str, str] | None:
        """Reverse of key(): the encoded parts of a key of this family, or None."""
        match = self._regex.match(key)
        return match.groupdict() if match else None

    def load(self, **parts: object) -> Any:
        return self.loader(**parts)

    def warm_parts(self, scope: WarmScope) -> Iterable[Parts]:
        if self.enumerate is not None:
            return self.enumerate(scope)
        return [{}] if not self.fields else []

    @cached_property
    def counters(self) -> metrics.FamilyCounters:
        return metrics.FamilyCounters(self.name)
