"""The registry of key families, filled by the domain apps at ``ready()``.

``core`` knows no domain: each app declares its families in its own ``cache.py`` and calls
``register()``; receivers that invalidate them are declared with ``@invalidates`` beside them and
connected with ``connect_receivers()``. Ops commands, the README key table and the admin page read
everything from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.apps import apps
from django.db.models import signals as model_signals
from django.dispatch import Signal

from .family import KeyFamily, Version

FAMILIES: dict[str, KeyFamily] = {}

# Sources of "recently active" user ids for warm-up, one per app that knows of activity.
ActivitySource = Callable[[datetime], Iterable[int]]
_ACTIVITY: dict[str, ActivitySource] = {}


def register(*families: KeyFamily) -> None:
    for family in families:
        existing = FAMILIES.get(family.name)
        if existing is not None and existing is not family:
            raise ValueError(f"cache family {family.name!r} is registered twice")
        FAMILIES[family.name] = family


def register_activity(name: str, source: ActivitySource) -> None:
    _ACTIVITY[name] = source


def activity_sources() -> dict[str, ActivitySource]:
    return dict(_ACTIVITY)


def versions() -> list[Version]:
    """The version keys the registered families count under, in registry order."""
    return list(dict.fromkeys(family.version for family in FAMILIES.values() if family.version is not None))


def family_of(key: str) -> KeyFamily | None:
    """The family a (namespace-free) key belongs to."""
    for family in FAMILIES.values():
        if family.parts_of(key) is not None:
            return family
    return None


def shared_families() -> tuple[str, ...]:
    return tuple(name for name, family in FAMILIES.items() if family.shared)


def user_families() -> tuple[str, ...]:
    return tuple(name for name, family in FAMILIES.items() if not family.shared)


# --- receivers ---------------------------------------------------------------------------------

_SIGNAL_WORDS = {
    "post_save": "saved", "post_delete": "deleted", "post_init": "loaded", "m2m_changed": "linked",
}


@dataclass(frozen=True)
class Trigger:
    """``signal`` sent by ``sender`` (a model label such as "accounts.User", or None for any)."""

    signal: Signal
    sender: str | None = None
    signal_name: str = ""

    def describe(self) -> str:
        if self.sender is None:
            return self.signal_name.replace("_", " ")
        return f"{self.sender.rpartition('.')[2]} {_SIGNAL_WORDS.get(self.signal_name, self.signal_name)}"


def on(signal_name: str, sender: str | None = None, *, signal: Signal | None = None) -> Trigger:
    """A model signal by name ("post_save", "post_delete"), or any Signal given as ``signal``."""
    return Trigger(signal or getattr(model_signals, signal_name), sender, signal_name)


def invalidates(*families: KeyFamily | Version, triggers: Iterable[Trigger] = (),
                when: str | None = None) -> Callable[[Callable], Callable]:
    """Declare what a function invalidates and, for a receiver, which signals call it.

    The declaration feeds the key table ("invalidated by"); ``connect_receivers`` connects the
    triggers with a stable ``dispatch_uid``. A function with no triggers is called by services
    (bulk updates send no signals); ``when`` says when, for the key table.
    """
    triggers = tuple(triggers)

    def mark(function: Callable) -> Callable:
        what = [trigger.describe() for trigger in triggers] or [when or f"{function.__name__}()"]
        for family in families:
            family.invalidated_by.extend(w for w in what if w not in family.invalidated_by)
        function.cache_triggers = triggers  # type: ignore[attr-defined]
        return function

    return mark


def connect_receivers(*receivers: Callable[..., Any]) -> None:
    """Connect each ``@invalidates`` receiver to its triggers (called from AppConfig.ready())."""
    for receiver in receivers:
        for trigger in getattr(receiver, "cache_triggers", ()):
            sender = apps.get_model(trigger.sender) if trigger.sender else None
            uid = f"{receiver.__module__}.{receiver.__name__}:{trigger.signal_name}:{trigger.sender}"
            trigger.signal.connect(receiver, sender=sender, weak=False, dispatch_uid=uid)
