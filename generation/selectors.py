from __future__ import annotations

from django.db.models import QuerySet

from core.cache import registry
from core.cache.store import Payload, fetch, fetch_data

from .models import Generation, GenerationSettings


def generation_settings_get() -> GenerationSettings:
    settings_row, _ = GenerationSettings.objects.get_or_create(pk=1)
    return settings_row


def generation_settings_payload() -> dict:
    # A read never creates the row: its post_save would invalidate (and drop the lease of) the
    # very value being loaded, so the first read would never be cached. Missing row = defaults.
    row = GenerationSettings.objects.filter(pk=1).first() or GenerationSettings(pk=1)
    return {
        "default_model": row.default_model,
        "allowed_sizes": list(row.allowed_sizes),
        "steps": row.steps,
        "max_steps": row.max_steps,
        "guidance": row.guidance,
        "cost_per_generation": row.cost_per_generation,
        "max_prompt_length": row.max_prompt_length,
        "enabled": row.enabled,
    }


def generation_settings_cached(*, readahead: dict | None = None) -> Payload:
    return fetch(registry.GENERATION_SETTINGS, readahead=readahead)


def generation_settings_data() -> dict:
    return fetch_data(registry.GENERATION_SETTINGS)


def generation_list(*, user_id: int) -> QuerySet[Generation]:
    return Generation.objects.filter(user_id=user_id).select_related("character").order_by("-id")
