"""Reads of characters. The cached families live in characters/cache.py."""

from __future__ import annotations

from core.cache.api import Payload, fetch

from .cache import CHARACTER, CHARACTERS_LIST


def character_list_cached(*, readahead: dict | None = None) -> Payload:
    return fetch(CHARACTERS_LIST, readahead=readahead)


def character_cached(*, name: str, readahead: dict | None = None) -> Payload:
    return fetch(CHARACTER, readahead=readahead, name=name)


def character_get_active(*, name: str) -> dict:
    """A character for a write path (chat, generation), from the cache."""
    return character_cached(name=name).data()
