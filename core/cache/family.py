"""A key family: one key template, its TTL, how its value is built, and how warm/verify find it.

Each domain app declares its families in its own ``cache.py``, beside the receivers that
invalidate them, and registers them in ``AppConfig.ready()`` (see ``core.cache.registry``).
"""

from __future__ import annotations

import inspect
import math
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from django.conf import settings

from core import metrics

from .keys import key_part
from .topology import TOPOLOGY

_FIELD = re.compile(r"\{(\w+)\}")
_KEYS_REMEMBERED = 10_000  # per family; then the memo starts over

Parts = dict[str, Any]
Loader = Callable[..., Any]
# Many keys at once, for warm-up (parts as the family's enumerate gives them): the value of
# parts_list[i] under i, exactly what loader(**parts) returns; an i left out is a key whose loader
# raises ObjectDoesNotExist (no such row).
BulkLoader = Callable[[list[Parts]], dict[int, Any]]
TtlCap = Callable[[Any], float | None]
Enumerator = Callable[["WarmScope"], Iterable[Parts]]


@dataclass(frozen=True)
class WarmScope:
    """What a warm-up covers: the shared families in full, and per-user keys of these users."""

    user_ids: tuple[int, ...] = ()
    since: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Page:
    """A family whose value is a page of the newest items (``{...,"<items>":[...],"has_more":...,
    "next_before":...}``, oldest first, each item's first field its ``order``): an amendment appends
    new items inside Redis (``Amendment.append``), so the page never crosses the wire for it."""

    items: str
    order: str
    cap_setting: str  # the setting holding how many items the page keeps

    @property
    def cap(self) -> int:
        return int(getattr(settings, self.cap_setting))



def _remember(keys: dict[tuple, str], memo: tuple | None, key: str) -> str:
    """Keep a built key under ``memo`` (None: not to be kept), within _KEYS_REMEMBERED."""
    if memo is not None:
        if len(keys) >= _KEYS_REMEMBERED:
            keys.clear()
        keys[memo] = key
    return key

@dataclass(frozen=True, kw_only=True)
class Version:
    """A version key: one small key per fan-out scope (every plan at once, one character name) that
    the values of the families naming it are built under. A cached value carries the version it
    was built under (``Payload.stamp``) and counts only while this key exists and holds that
    version; a write that changes the scope deletes the key (``invalidate((VERSION, parts))``, one
    command however many keys it covers), and the next fill starts a new random version. A missing
    key (deleted, evicted, a restart) means misses, never a stale value. It has no TTL: a few bytes
    per scope. Its parts are some of the families' parts; in Redis Cluster it is tagged by ``tag``
    (None: the whole key), so it can share a slot with a key read beside it."""

    name: str
    template: str
    holds: str
    tag: str | None = None
    invalidated_by: list[str] = field(default_factory=list, compare=False)  # filled by @invalidates

    @cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(_FIELD.findall(self.template))

    @cached_property
    def cluster_template(self) -> str:
        if self.tag is None:
            return "{{" + self.template + "}}"
        field = "{" + self.tag + "}"
        return self.template.replace(field, "{{" + field + "}}")

    @property
    def cluster_form(self) -> str:
        return self.cluster_template.format(**{name: "{" + name + "}" for name in self.fields})

    @property
    def pattern(self) -> str:
        """SCAN pattern of every version key of this kind."""
        template = self.cluster_template if TOPOLOGY.cluster else self.template
        return "".join(literal + ("*" if name is not None else "") for literal, name, _, _ in string.Formatter().parse(template))

    def key(self, **parts: object) -> str:
        """The version key of the scope these parts (a family's, or just the scope's own) fall in."""
        template = self.cluster_template if TOPOLOGY.cluster else self.template
        # Read beside its values on every cached read: remembered (no part, or one str part).
        fields = self.fields
        value = parts[fields[0]] if len(fields) == 1 else None
        memo = (template, value) if not fields or type(value) is str else None
        if memo is not None:
            known = self._keys.get(memo)
            if known is not None:
                return known
        key = template.format(**{name: key_part(parts[name]) for name in fields})
        return _remember(self._keys, memo, key)

    @cached_property
    def _keys(self) -> dict[tuple, str]:
        return {}

    def __hash__(self) -> int:
        return hash(self.name)

    @cached_property
    def counters(self) -> metrics.FamilyCounters:
        return metrics.FamilyCounters(self.name)


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
    bulk_loader: BulkLoader | None = None  # warm-up loads a batch of keys in a few queries; None: one by one
    invalidated_by: list[str] = field(default_factory=list, compare=False)  # filled by @invalidates
    # Redis Cluster: the part whose value is the key's hash tag, so keys one request reads share a
    # slot (per user: "user_id"). A tag part the template lacks goes in front of the first part
    # (user:email:{123}:<email>); None tags the whole key (shared keys: {characters:list}).
    tag: str | None = None
    page: Page | None = None  # amendments append inside Redis (the value's shape: Page)
    near: bool = False  # also held in each process, kept coherent by Redis tracking (near.py)
    # A value counts only while this version key holds the version it was built under: a write
    # that changes many keys at once (a plan edit, a rename) deletes one version key instead.
    version: Version | None = None

    def __post_init__(self) -> None:
        if self.page is not None and self.ttl_cap is not None:
            raise TypeError(f"{self.name}: a page amended inside Redis keeps the family's TTL (no ttl_cap)")
        if self.version is not None and not set(self.version.fields) <= set(self.fields):
            raise TypeError(f"{self.name}: version {self.version.name} needs parts {self.version.fields} "
                            f"the key does not have {self.fields}")
        # fetch() calls the loader with the key's parts as keywords: a template and a loader that
        # disagree fail here, when the app's cache.py is imported, not on a miss in production.
        try:
            inspect.signature(self.loader).bind(**dict.fromkeys(self.fields))
        except TypeError as exc:
            raise TypeError(f"{self.name}: loader {getattr(self.loader, '__qualname__', self.loader)!r} does "
                            f"not take exactly the key's parts {self.fields} as keywords ({exc})") from None

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
        """The parts a key needs, in either mode (the cluster form may add the tag part)."""
        fields = tuple(_FIELD.findall(self.template))
        return fields if self.tag is None or self.tag in fields else (*fields, self.tag)

    @cached_property
    def cluster_template(self) -> str:
        """The key in cluster mode, as a format string: literal braces are the hash tag."""
        if self.tag is None:
            return "{{" + self.template + "}}"
        field = "{" + self.tag + "}"
        if field in self.template:
            return self.template.replace(field, "{{" + field + "}}")
        first = self.template.find("{")
        at = len(self.template) if first < 0 else first
        return self.template[:at] + "{{" + field + "}}:" + self.template[at:]

    @property
    def cluster_form(self) -> str:
        """The cluster key as the docs show it: ``user:coins:{{user_id}}`` is ``user:coins:{123}``."""
        return self.cluster_template.format(**{name: "{" + name + "}" for name in self.fields})

    def _active_template(self) -> str:
        return self.cluster_template if TOPOLOGY.cluster else self.template

    def key(self, **parts: object) -> str:
        template = self._active_template()
        values = tuple(parts.get(name) for name in self.fields)
        # A cached read builds each of its keys twice (read-ahead, then fetch) and every request
        # of a user builds the same ones: remember them. Only str and int parts (True == 1 would
        # share an entry with 1 but not its key).
        memo = (template, *values) if all(type(value) is str or type(value) is int for value in values) else None
        if memo is not None and len(parts) == len(values):
            known = self._keys.get(memo)
            if known is not None:
                return known
        if set(parts) != set(self.fields):
            raise TypeError(f"{self.name} needs {self.fields}, got {tuple(parts)}")
        key = template.format(**{name: key_part(value) for name, value in parts.items()})
        return _remember(self._keys, memo, key)

    @cached_property
    def _keys(self) -> dict[tuple, str]:
        return {}

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
        """SCAN pattern that matches this family's keys and no other family's (braces are literal
        in Redis globs)."""
        return "".join(literal + ("*" if name is not None else "")
                       for literal, name, _, _ in string.Formatter().parse(self._active_template()))

    @cached_property
    def _regexes(self) -> dict[str, re.Pattern[str]]:
        return {template: re.compile("".join(
            re.escape(literal) + (f"(?P<{name}>[^:]+)" if name is not None else "")
            for literal, name, _, _ in string.Formatter().parse(template)) + r"\Z")
            for template in (self.template, self.cluster_template)}

    def parts_of(self, key: str) -> dict[str, str] | None:
        """Reverse of key(): the encoded parts of a key of this family, or None."""
        match = self._regexes[self._active_template()].match(key)
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
