"""Reads of characters: ``characters:list`` and ``character:{name}``."""

from __future__ import annotations

from core.cache import registry
from core.cache.store import Payload, fetch

from .models import Character

_PUBLIC_FIELDS = ("name", "display_name", "description", "greeting", "avatar_url", "is_premium", "sort_order")


def character_public(character: Character) -> dict:
    return {field: getattr(character, field) for field in _PUBLIC_FIELDS}


def character_list_payload() -> list[dict]:
    return [character_public(c) for c in Character.objects.filter(is_active=True).only(*_PUBLIC_FIELDS)]


def character_payload(*, name: str) -> dict:
    """Raises Character.DoesNotExist for an unknown or inactive character (nothing is cached)."""
    return character_public(Character.objects.only(*_PUBLIC_FIELDS).get(name=name, is_active=True))


def character_list_cached(*, readahead: dict | None = None) -> Payload:
    return fetch(registry.CHARACTERS_LIST, readahead=readahead)


def character_cached(*, name: str, readahead: dict | None = None) -> Payload:
    return fetch(registry.CHARACTER, readahead=readahead, name=name)


def character_get_active(*, name: str) -> dict:
    """A character for a write path (chat, generation), from the cache."""
    return character_cached(name=name).data()
