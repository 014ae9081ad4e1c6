"""The generation cache families, ``generation:settings`` and ``generation:status:{user_id}:{generation_id}``:
their values, their invalidation. Registered in GenerationConfig.ready()."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from core.cache.api import KeyFamily, connect_receivers, invalidate, invalidates, on, register, register_activity
from core.http.formatting import iso_utc

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
    near=True,
)


@invalidates(GENERATION_SETTINGS, triggers=[on("post_save", "generation.GenerationSettings"),
                                            on("post_delete", "generation.GenerationSettings")])
def flush_generation_settings(**kwargs: object) -> None:
    invalidate((GENERATION_SETTINGS, {}))


def generation_payload(gen: Generation) -> dict:
    """What the API shows of a generation (``character`` loaded, or only its id and name)."""
    return {
        "id": gen.id,
        "status": gen.status,
        "prompt": gen.prompt,
        "character": gen.character.name if gen.character is not None else None,
        "parameters": gen.parameters,
        "cost": gen.cost,
        "result": gen.result,
        "created_at": iso_utc(gen.created_at),
    }


def generation_status_payload(*, user_id: int, generation_id: int) -> dict:
    """One generation of this user. Raises Generation.DoesNotExist: another user's generation is
    as unknown as a missing one."""
    return generation_payload(Generation.objects.select_related("character").get(pk=generation_id, user_id=user_id))


# Clients poll it while a worker renders: a poll is a hit until the job's outcome deletes it.
GENERATION_STATUS = KeyFamily(
    name="generation:status", template="generation:status:{user_id}:{generation_id}",
    ttl_setting="CACHE_TTL_GENERATION_STATUS", default_ttl=300, loader=generation_status_payload,
    holds="one generation: its status and result", tag="user_id",
)


def status_target(*, user_id: int, generation_id: int) -> tuple[KeyFamily, dict]:
    return (GENERATION_STATUS, {"user_id": user_id, "generation_id": generation_id})


@invalidates(GENERATION_STATUS, when="its job starts, completes or fails (a conditional update: no signal)")
def invalidate_generation_status(*, user_id: int, generation_id: int) -> None:
    invalidate(status_target(user_id=user_id, generation_id=generation_id))


@invalidates(GENERATION_STATUS, triggers=[on("post_save", "generation.Generation"),
                                          on("post_delete", "generation.Generation")])
def flush_generation(*, instance: Generation, created: bool = False, **kwargs: object) -> None:
    """A generation saved or deleted one by one (the admin, a cascade). A new row has no key yet."""
    if not created:
        invalidate_generation_status(user_id=instance.user_id, generation_id=instance.pk)


def _active_users(since: datetime) -> Iterable[int]:
    # order_by(): DISTINCT with the model's ordering would select the ordering's columns too (a row per generation)
    return Generation.objects.filter(created_at__gte=since).order_by().values_list("user_id", flat=True).distinct()


def connect() -> None:
    register(GENERATION_SETTINGS, GENERATION_STATUS)
    register_activity("generation", _active_users)
    connect_receivers(flush_generation_settings, flush_generation)
