"""The generation cache family, ``generation:settings``: its value, its invalidation.
Registered in GenerationConfig.ready()."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from core.cache.api import KeyFamily, connect_receivers, invalidate, invalidates, on, register, register_activity

from .models import Generation, GenerationSettings


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


GENERATION_SETTINGS = KeyFamily(
    name="generation:settings", template="generation:settings", ttl_setting="CACHE_TTL_GENERATION_SETTINGS",
    default_ttl=3600, loader=generation_settings_payload, holds="generation settings", shared=True,
)


@invalidates(GENERATION_SETTINGS, triggers=[on("post_save", "generation.GenerationSettings"),
                                            on("post_delete", "generation.GenerationSettings")])
def flush_generation_settings(**kwargs: object) -> None:
    invalidate((GENERATION_SETTINGS, {}))


def _active_users(since: datetime) -> Iterable[int]:
    # order_by(): DISTINCT with the model's ordering would select the ordering's columns too (a row per generation)
    return Generation.objects.filter(created_at__gte=since).order_by().values_list("user_id", flat=True).distinct()


def connect() -> None:
    register(GENERATION_SETTINGS)
    register_activity("generation", _active_users)
    connect_receivers(flush_generation_settings)
