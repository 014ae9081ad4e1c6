"""Generations: check the plan, charge atomically, record, hand the rendering to a worker
(generation/jobs.py), refund on failure."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import orjson
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework import exceptions

from accounts.cache import coins_set_to, coins_target
from accounts.models import CoinLedgerEntry
from accounts.services import coins_apply, coins_spend
from characters.models import Character
from characters.selectors import character_get_active, character_id_if_active
from core.cache.api import amend_after_commit
from core.clock import day_start
from core.http.exceptions import Conflict, PlanForbids
from subscriptions.cache import stats_after_use, stats_target
from subscriptions.services import usage_count, usage_release

from .backends import renderable
from .cache import generation_payload, invalidate_generation_status
from .models import Generation, GenerationSettings
from .queue import generation_enqueue
from .selectors import generation_settings_data

logger = logging.getLogger(__name__)

UNFINISHED = (Generation.Status.PENDING, Generation.Status.RUNNING)


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
    other parameters is a 409.

    The charge commits first (a pending generation, its coins and its daily use); once it has
    committed, the job is queued (generation/jobs.py): a worker renders it, then the generation
    completes, or fails and gives the coins and the daily use back. The pending row is the job's
    durable record: a message the queue loses is sent again by the sweep.
    """
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
    # Only the sizes the image backend renders: a size the provider would refuse is refused here,
    # before the charge, rather than charged, queued, refused and refunded. No size given: the
    # first of them; none at all (settings and model disagree): a 400 that says so.
    usable = renderable(conf["allowed_sizes"])
    if not usable:
        errors["size"] = [f"No size is available: the image model renders none of the allowed sizes "
                          f"({', '.join(conf['allowed_sizes'])})."]
    elif size is None:
        size = usable[0]
    elif size in conf["allowed_sizes"] and size not in usable:
        errors["size"] = [f"The image model cannot render {size}: one of {', '.join(usable)}."]
    elif size not in usable:
        errors["size"] = [f"One of {', '.join(usable)}."]
    steps = conf["steps"] if steps is None else steps
    if not 1 <= steps <= conf["max_steps"]:
        errors["steps"] = [f"Between 1 and {conf['max_steps']}."]
    premium = False
    if character is not None:
        try:
            premium = character_get_active(name=character)["is_premium"]  # cached (character:{name})
        except Character.DoesNotExist:
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
    try:
        gen = _generation_charge(user_id=user_id, character=character, premium=premium, prompt=prompt,
                                 parameters=parameters, cost=conf["cost_per_generation"],
                                 idempotency_key=idempotency_key, fingerprint=fingerprint)
    except IntegrityError:
        # A concurrent retry with the same key committed first: answer with its generation.
        if idempotency_key is None or (first := _replay(user_id, idempotency_key, fingerprint)) is None:
            raise
        return first, False
    transaction.on_commit(lambda: generation_enqueue(generation_id=gen.pk), robust=True)
    return generation_payload(gen), True


def _generation_charge(*, user_id: int, character: str | None, premium: bool, prompt: str, parameters: dict,
                       cost: int, idempotency_key: str | None, fingerprint: str) -> Generation:
    """One transaction: use one of today's generations (the plan's check and its daily limit),
    record a pending generation, spend its coins. The daily limit and the balance are each one
    conditional update, so no lock is taken first; a refusal (the plan, the limit, the balance, a
    character gone since it was cached) rolls the whole write back."""
    # The cached stats and balance take the new count, spend and balance rather than being
    # deleted, so the next read of either still hits (amend_after_commit).
    targets = (stats_target(user_id=user_id), *((coins_target(user_id=user_id),) if cost else ()))
    with amend_after_commit(*targets) as (stats_key, *coins_key), transaction.atomic():
        usage_count(user_id=user_id, kind="generations", premium=premium)
        character_id = None
        if character is not None:
            character_id = character_id_if_active(name=character)
            if character_id is None:  # deactivated since it was cached
                raise exceptions.ValidationError({"character": [f"Unknown character {character!r}."]})
        gen = _generation_insert(Generation(user_id=user_id, character_id=character_id, prompt=prompt,
                                            parameters=parameters, cost=cost, idempotency_key=idempotency_key,
                                            request_fingerprint=fingerprint))
        if cost:
            spent = coins_spend(user_id=user_id, cost=cost, reference=f"generation:{gen.id}")
            coins_key[0].change(coins_set_to(spent.balance_after))
        stats_key.change(stats_after_use(kind="generations", day=day_start(gen.created_at).date(), coins=cost))
    if character_id is not None:  # as .only("id", "name") would load it: the payload names it
        gen.character = Character.from_db(gen._state.db, ["id", "name"], [character_id, character])
    return gen


def _generation_insert(gen: Generation) -> Generation:
    """Insert the pending generation (no save receivers listen to it). Written out, as the ORM's
    save() would write it: on this path (every charge) the ORM's query building costs several
    times the statement's round trip."""
    fields = [field for field in Generation._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(Generation._meta.db_table)} ({', '.join(quote(field.column) for field in fields)})"
            f" VALUES ({', '.join(['%s'] * len(fields))}) RETURNING id",
            [field.get_db_prep_save(field.pre_save(gen, True), connection) for field in fields],
        )
        (gen.pk,) = cursor.fetchone()
    gen._state.adding, gen._state.db = False, connection.alias
    return gen


def generation_fail(*, generation: Generation, reason: str) -> None:
    """Mark an unfinished generation failed and give back what it took (coins, daily use), once:
    the conditional update lets one caller through (a worker's last try, the stale rule)."""
    with transaction.atomic():
        failed = Generation.objects.filter(pk=generation.pk, status__in=UNFINISHED).update(
            status=Generation.Status.FAILED, result={"error": reason})
        # The daily use first, then the coins: the order a charge takes their rows in.
        if failed:
            usage_release(user_id=generation.user_id, kind="generations", day=day_start(generation.created_at).date())
        if failed and generation.cost:
            coins_apply(user_id=generation.user_id, amount=generation.cost, reason=CoinLedgerEntry.Reason.REFUND,
                        reference=f"generation:{generation.pk}")
        if failed:
            invalidate_generation_status(user_id=generation.user_id, generation_id=generation.pk)
    generation.status, generation.result = Generation.Status.FAILED, {"error": reason}


def generations_fail_stale(*, older_than: timedelta) -> int:
    """Generations given up on (no worker finished them in time): fail and refund them (the
    sweep runs it periodically, generation/tasks.py). A worker's late result then changes nothing."""
    stale = Generation.objects.filter(status__in=UNFINISHED, created_at__lt=timezone.now() - older_than)
    count = 0
    for gen in stale.only("id", "user_id", "cost", "created_at", "status"):
        generation_fail(generation=gen, reason="The generation did not finish.")
        count += 1
    return count


def generation_settings_update(**changes) -> GenerationSettings:
    """Admin and scripts edit settings here; post_save invalidates ``generation:settings``."""
    with transaction.atomic():
        row, _ = GenerationSettings.objects.select_for_update().get_or_create(pk=1)
        for field, value in changes.items():
            setattr(row, field, value)
        row.full_clean()
        row.save()
    return row
