"""Reads of generations and their settings. The cached family lives in generation/cache.py."""

from __future__ import annotations

from django.db.models import QuerySet

from core.cache.api import Payload, fetch, fetch_data

from .cache import GENERATION_SETTINGS, GENERATION_STATUS
from .models import Generation, GenerationSettings


def generation_settings_get() -> GenerationSettings:
    settings_row, _ = GenerationSettings.objects.get_or_create(pk=1)
    return settings_row


def generation_settings_cached(*, readahead: dict | None = None) -> Payload:
    return fetch(GENERATION_SETTINGS, readahead=readahead)


def generation_settings_data() -> dict:
    return fetch_data(GENERATION_SETTINGS)


def generation_list(*, user_id: int) -> QuerySet[Generation]:
    return Generation.objects.filter(user_id=user_id).select_related("character").order_by("-id")


def generation_status_cached(*, user_id: int, generation_id: int, readahead: dict | None = None) -> Payload:
    """``generation:status:{user_id}:{generation_id}``; raises Generation.DoesNotExist for another
    user's generation as for a missing one."""
    return fetch(GENERATION_STATUS, readahead=readahead, user_id=user_id, generation_id=generation_id)
