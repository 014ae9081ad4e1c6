"""Writes of characters; admin uses these too."""

from __future__ import annotations

from django.db import transaction

from .cache import invalidate_characters
from .models import Character


def character_save(*, character: Character) -> Character:
    """Save (create or edit). post_save invalidates the list and the old and new name."""
    with transaction.atomic():
        character.save()
    return character


def characters_set_active(*, names: list[str], active: bool) -> int:
    """Bulk (de)activation: an update() sends no signals, so invalidate here."""
    with transaction.atomic():
        count = Character.objects.filter(name__in=names).update(is_active=active)
        invalidate_characters(names=names)
    return count
