from __future__ import annotations

from django.db.models import QuerySet

from core.cache import registry
from core.cache.store import Payload, fetch, fetch_data

from .models import Generation, GenerationSettings


def generation_settings_get() -> GenerationSettings:
    settings_row, _ = GenerationSettings.objects.get_or_create(pk=1)
    return settings_row


def generation_settings_payload() -> dict:
    row = generation_settings_get()
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


def generation_settings_cached() -> Payload:
    return fetch(registry.GENERATION_SETTINGS)


def generation_settings_data() -> dict:
    return fetch_data(registry.GENERATION_SETTINGS)


def generation_list(*, user_id: int) -> QuerySet[Generation]:
    return Generation.objects.filter(user_id=user_id).select_related("character").order_by("-id")
