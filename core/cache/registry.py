"""Every cache key family in one table: template, TTL setting, reader, and what invalidates it.

| family               | key template                                    | TTL setting (default)              | invalidated by |
|----------------------|-------------------------------------------------|------------------------------------|----------------|
| subscription:user    | subscription:user:{user_id}                     | CACHE_TTL_SUBSCRIPTION_USER (300)  | subscribe, plan change, cancel, expiry, plan edit |
| subscription:stats   | subscription:stats:{user_id}                    | CACHE_TTL_SUBSCRIPTION_STATS (300) | generation, chat message, ledger entry, plan change |
| user:email           | user:email:{email}                              | CACHE_TTL_USER_EMAIL (120)         | any user save (old and new email), deactivation, password change |
| user:coins           | user:coins:{user_id}                            | CACHE_TTL_USER_COINS (60)          | any ledger entry (spend, grant, refund) |
| characters:list      | characters:list                                 | CACHE_TTL_CHARACTERS_LIST (1800)   | any character save or delete |
| character            | character:{name}                                | CACHE_TTL_CHARACTER (1800)         | that character's save or delete (old and new name) |
| generation:settings  | generation:settings                             | CACHE_TTL_GENERATION_SETTINGS (3600) | settings save |
| chat:history         | chat:history:{user_id}:{character}:{session}    | CACHE_TTL_CHAT_HISTORY (600)       | a new message in that session |

Each value is JSON: ``{"etag": "<16 hex>", "data": <the response body>}``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

from django.conf import settings
from django.utils.module_loading import import_string

from .keys import key_part

_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class KeyFamily:
    name: str
    template: str
    ttl_setting: str
    default_ttl: int
    reader: str  # dotted path of the selector that builds the value from the database
    holds: str
    invalidated_by: str
    shared: bool = False  # the same value for every user (ETag) rather than per user (private)
    ttl_cap: str | None = None  # dotted path: f(data) -> seconds the value may live at most

    def ttl_for(self, payload) -> int:
        """The TTL to store this value with: the family's, or less if its cap says so. A cap of
        None (nothing to cap by) or a non-finite one leaves the family's TTL; never below 1 s."""
        if self.ttl_cap is None:
            return self.ttl
        cap = import_string(self.ttl_cap)(payload.data())
        if cap is None or not math.isfinite(cap):
            return self.ttl
        return max(1, min(self.ttl, int(cap)))

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

    def load(self, **parts: object):
        return import_string(self.reader)(**parts)


SUBSCRIPTION_USER = KeyFamily(
    "subscription:user", "subscription:user:{user_id}", "CACHE_TTL_SUBSCRIPTION_USER", 300,
    "subscriptions.selectors.subscription_payload",
    "the user's current subscription", "subscribe, plan change, cancel, expiry, plan edit",
    ttl_cap="subscriptions.selectors.seconds_until_period_end",
)
SUBSCRIPTION_STATS = KeyFamily(
    "subscription:stats", "subscription:stats:{user_id}", "CACHE_TTL_SUBSCRIPTION_STATS", 300,
    "subscriptions.selectors.subscription_stats_payload",
    "usage in the current period", "generation, chat message, ledger entry, plan change",
    ttl_cap="subscriptions.selectors.seconds_until_day_ends",
)
USER_EMAIL = KeyFamily(
    "user:email", "user:email:{email}", "CACHE_TTL_USER_EMAIL", 120,
    "accounts.selectors.user_payload_by_email",
    "the user's profile and flags", "any user save (old and new email), deactivation, password change",
)
USER_COINS = KeyFamily(
    "user:coins", "user:coins:{user_id}", "CACHE_TTL_USER_COINS", 60,
    "accounts.selectors.coins_payload",
    "coin balance", "any ledger entry (spend, grant, refund)",
)
CHARACTERS_LIST = KeyFamily(
    "characters:list", "characters:list", "CACHE_TTL_CHARACTERS_LIST", 1800,
    "characters.selectors.character_list_payload",
    "the active characters", "any character save or delete", shared=True,
)
CHARACTER = KeyFamily(
    "character", "character:{name}", "CACHE_TTL_CHARACTER", 1800,
    "characters.selectors.character_payload",
    "one character", "that character's save or delete (old and new name)", shared=True,
)
GENERATION_SETTINGS = KeyFamily(
    "generation:settings", "generation:settings", "CACHE_TTL_GENERATION_SETTINGS", 3600,
    "generation.selectors.generation_settings_payload",
    "generation settings", "settings save", shared=True,
)
CHAT_HISTORY = KeyFamily(
    "chat:history", "chat:history:{user_id}:{character}:{session}", "CACHE_TTL_CHAT_HISTORY", 600,
    "chat.selectors.chat_history_payload",
    "recent messages of one chat session", "a new message in that session",
)

FAMILIES: dict[str, KeyFamily] = {
    family.name: family
    for family in (
        SUBSCRIPTION_USER, SUBSCRIPTION_STATS, USER_EMAIL, USER_COINS,
        CHARACTERS_LIST, CHARACTER, GENERATION_SETTINGS, CHAT_HISTORY,
    )
}


def family_of(key: str) -> KeyFamily | None:
    """The family a (namespace-free) key belongs to."""
    for family in FAMILIES.values():
        if family.parts_of(key) is not None:
            return family
    return None
