"""Generations: check the plan, charge atomically, record, render, refund on backend failure."""

from __future__ import annotations

import hashlib

import orjson
from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string
from rest_framework import exceptions

from accounts.models import CoinLedgerEntry, User
from accounts.services import coins_apply
from characters.models import Character
from core.cache import registry
from core.cache.store import invalidate
from core.exceptions import Conflict, PlanForbids
from core.formatting import iso_utc
from subscriptions.selectors import day_start, subscription_require

from .models import Generation, GenerationSettings
from .selectors import generation_settings_data


def generation_payload(gen: Generation) -> dict:
    return {
        "id": gen.id,
        "status": gen.status,
        "prompt": gen.prompt,
        "character": gen.character.name if gen.character_id else None,
        "parameters": gen.parameters,
        "cost": gen.cost,
        "result": gen.result,
        "created_at": iso_utc(gen.created_at),
    }


def _backend():
    return import_string(settings.GENERATION_BACKEND)()


def _replay(user_id: int, idempotency_key: str, fingerprint: str) -> dict | None:
    first = Generation.objects.filter(user_id=user_id, idempotency_key=idempotency_key).first()
    if first is None:
        return None
    if first.request_fingerprint != fingerprint:
        raise Conflict("This Idempotency-Key was used with other parameters.", code="idempotency_mismatch")
    return generation_payload(first)


def generation_create(
    *,
    user_id: int,
    prompt: str,
    character: str | None = None,
    size: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    idempotency_key: str | None = None,
) -> tuple[dict, bool]:
    """Returns (generation, created). A retry with the same idempotency key returns the first
    generation and charges nothing, whatever changed since (settings, plan); the same key with
    other parameters is a 409."""
    request = {"prompt": prompt, "character": character, "size": size, "steps": steps, "guidance": guidance,
               "seed": seed}
    fingerprint = hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()
    if idempotency_key is not None and (first := _replay(user_id, idempotency_key, fingerprint)) is not None:
        return first, False
    conf = generation_settings_data()
    if not conf["enabled"]:
        raise PlanForbids("Image generation is switched off.", code="generation_disabled")
    errors = {}
    if len(prompt) > conf["max_prompt_length"]:
        errors["prompt"] = [f"At most {conf['max_prompt_length']} characters."]
    size = size or conf["allowed_sizes"][0]
    if size not in conf["allowed_sizes"]:
        errors["size"] = [f"One of {', '.join(conf['allowed_sizes'])}."]
    steps = conf["steps"] if steps is None else steps
    if not 1 <= steps <= conf["max_steps"]:
        errors["steps"] = [f"Between 1 and {conf['max_steps']}."]
    char = None
    if character is not None:
        char = Character.objects.filter(name=character, is_active=True).only("id", "name", "is_premium").first()
        if char is None:
            errors["character"] = [f"Unknown character {character!r}."]
    if errors:
        raise exceptions.ValidationError(errors)
    parameters = {
        "model": conf["default_model"],
        "size": size,
        "steps": steps,
        "guidance": conf["guidance"] if guidance is None else guidance,
        "seed": seed,
    }
    plan = subscription_require(user_id=user_id, premium=bool(char and char.is_premium))

    with transaction.atomic():
        User.objects.select_for_update().only("id").get(pk=user_id)  # serialises this user's spends
        # Checked again under the lock: a concurrent retry may have just created it.
        if idempotency_key is not None and (first := _replay(user_id, idempotency_key, fingerprint)) is not None:
            return first, False
        used = Generation.objects.filter(user_id=user_id, created_at__gte=day_start()).exclude(
            status=Generation.Status.FAILED
        ).count()
        if used >= plan["daily_generation_limit"]:
            raise PlanForbids("Daily generation limit reached.", code="daily_generation_limit")
        cost = conf["cost_per_generation"]
        gen = Generation.objects.create(
            user_id=user_id, character=char, prompt=prompt, parameters=parameters, cost=cost,
            idempotency_key=idempotency_key, request_fingerprint=fingerprint,
        )
        if cost:
            coins_apply(user_id=user_id, amount=-cost, reason=CoinLedgerEntry.Reason.SPEND,
                        reference=f"generation:{gen.id}")
        try:
            gen.result = _backend().generate(prompt=prompt, parameters=parameters)
            gen.status = Generation.Status.COMPLETED
        except Exception:  # the provider failed: the user keeps their coins
            gen.status = Generation.Status.FAILED
            gen.result = {"error": "The image backend failed."}
            if cost:
                coins_apply(user_id=user_id, amount=cost, reason=CoinLedgerEntry.Reason.REFUND,
                            reference=f"generation:{gen.id}")
        gen.save(update_fields=["status", "result"])
    return generation_payload(gen), True


def generation_settings_update(**changes) -> GenerationSettings:
    """Admin and scripts edit settings here; post_save invalidates ``generation:settings``."""
    with transaction.atomic():
        row, _ = GenerationSettings.objects.select_for_update().get_or_create(pk=1)
        for field, value in changes.items():
            setattr(row, field, value)
        row.full_clean()
        row.save()
    return row


def invalidate_generation_settings(**kwargs) -> None:
    invalidate((registry.GENERATION_SETTINGS, {}))


def invalidate_generation_stats(*, instance, **kwargs) -> None:
    invalidate((registry.SUBSCRIPTION_STATS, {"user_id": instance.user_id}))
