"""Reads of characters. The cached families live in characters/cache.py."""

from __future__ import annotations

from django.db import connection

from core.cache.api import Payload, fetch

from .cache import CHARACTER, CHARACTERS_LIST
from .models import Character


def character_list_cached(*, readahead: dict | None = None) -> Payload:
    return fetch(CHARACTERS_LIST, readahead=readahead)


def character_cached(*, name: str, readahead: dict | None = None) -> Payload:
    return fetch(CHARACTER, readahead=readahead, name=name)


def character_get_active(*, name: str) -> dict:
    """A character for a write path (chat, generation), from the cache."""
    return character_cached(name=name).data()


PERSONA_FIELDS = ("name", "display_name", "greeting", "persona_prompt")


def character_id_if_active(*, name: str) -> int | None:
    """The character's id if it is still active, from the row: a write must not trust a cached
    ``character:{name}`` that outlived a deactivation."""
    return Character.objects.filter(name=name, is_active=True).values_list("id", flat=True).first()


def character_persona(*, name: str) -> dict | None:
    """The character's id and persona (``PERSONA_FIELDS``) if it is still active, from the row:
    the persona prompt is never cached. Written out: every chat post reads it, and the ORM's
    query building costs several times this statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, {', '.join(PERSONA_FIELDS)} FROM {connection.ops.quote_name(Character._meta.db_table)}"
            " WHERE name = %s AND is_active",
            [name],
        )
        row = cursor.fetchone()
    return None if row is None else dict(zip(("id", *PERSONA_FIELDS), row, strict=True))
