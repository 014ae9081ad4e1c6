"""Writes of subscriptions. Subscribing grants the plan's coins through the ledger."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework import exceptions

from accounts.models import CoinLedgerEntry
from accounts.services import coins_apply
from core.cache import registry
from core.cache.store import invalidate

from .models import Plan, Subscription

FREE_PLAN_DEFAULTS = {
    "name": "Free",
    "price": 0,
    "coins_per_period": 30,
    "daily_generation_limit": 5,
    "daily_message_limit": 50,
    "includes_premium": False,
    "sort_order": 0,
}


def plan_free() -> Plan:
    plan, _ = Plan.objects.get_or_create(code="free", defaults=FREE_PLAN_DEFAULTS)
    return plan


def _start(*, user_id: int, plan: Plan) -> Subscription:
    now = timezone.now()
    period = {
        "plan": plan,
        "status": Subscription.Status.ACTIVE,
        "current_period_start": now,
        "current_period_end": now + timedelta(days=settings.SUBSCRIPTION_PERIOD_DAYS),
        "auto_renew": True,
    }
    sub, _ = Subscription.objects.update_or_create(user_id=user_id, defaults=period)
    # One grant per plan per period: switching back and forth between plans must not mint coins.
    already_granted = CoinLedgerEntry.objects.filter(
        user_id=user_id,
        reason=CoinLedgerEntry.Reason.PLAN_GRANT,
        reference=f"plan:{plan.code}",
        created_at__gt=now - timedelta(days=settings.SUBSCRIPTION_PERIOD_DAYS),
    ).exists()
    if plan.coins_per_period and not already_granted:
        coins_apply(
            user_id=user_id,
            amount=plan.coins_per_period,
            reason=CoinLedgerEntry.Reason.PLAN_GRANT,
            reference=f"plan:{plan.code}",
            idempotency_key=f"plan:{plan.code}:{now.isoformat()}",
        )
    return sub  # post_save invalidates subscription:user and subscription:stats


def subscription_start_free(*, user_id: int) -> Subscription:
    with transaction.atomic():
        return _start(user_id=user_id, plan=plan_free())


def subscription_change(*, user_id: int, plan_code: str) -> tuple[Subscription, bool]:
    """Subscribe to a plan or switch to another. Returns (subscription, changed).

    Asking again for the plan you already have, still active, changes nothing and grants nothing.
    """
    from accounts.models import User

    plan = Plan.objects.filter(code=plan_code, is_active=True).first()
    if plan is None:
        raise exceptions.ValidationError({"plan": [f"Unknown plan {plan_code!r}."]}, code="unknown_plan")
    with transaction.atomic():
        User.objects.select_for_update().only("id").get(pk=user_id)  # one change at a time per user
        current = Subscription.objects.filter(user_id=user_id).first()
        if (
            current is not None
            and current.plan_id == plan.id
            and current.status == Subscription.Status.ACTIVE
            and current.current_period_end > timezone.now()
        ):
            return current, False
        return _start(user_id=user_id, plan=plan), True


def subscription_cancel(*, user_id: int) -> Subscription:
    """Stop renewal; access lasts until the paid period ends."""
    with transaction.atomic():
        sub = Subscription.objects.select_for_update().filter(user_id=user_id).first()
        if sub is None:
            raise exceptions.NotFound("You have no subscription.")
        if sub.status == Subscription.Status.ACTIVE:
            sub.status = Subscription.Status.CANCELLED
            sub.auto_renew = False
            sub.save(update_fields=["status", "auto_renew", "updated_at"])
    return sub


def subscriptions_renew(*, now=None) -> dict[str, int]:
    """The periodic job (``manage.py subscriptions_renew``): subscriptions past their period end
    that renew start a new period (granting the plan's coins); the others expire."""
    from accounts.models import User

    now = now or timezone.now()
    due = list(
        Subscription.objects.filter(
            current_period_end__lte=now, status=Subscription.Status.ACTIVE, auto_renew=True, plan__is_active=True
        ).values_list("user_id", flat=True)
    )
    renewed = 0
    for user_id in due:
        with transaction.atomic():
            User.objects.select_for_update().only("id").get(pk=user_id)
            sub = Subscription.objects.select_related("plan").get(user_id=user_id)
            if sub.current_period_end <= now and sub.status == Subscription.Status.ACTIVE and sub.auto_renew:
                _start(user_id=user_id, plan=sub.plan)
                renewed += 1
    return {"renewed": renewed, "expired": subscriptions_expire(now=now)}


def subscriptions_expire(*, now=None) -> int:
    """Mark subscriptions past their period end as expired (a periodic job; signal-less update)."""
    now = now or timezone.now()
    with transaction.atomic():
        user_ids = list(
            Subscription.objects.select_for_update()
            .filter(current_period_end__lte=now)
            .exclude(status=Subscription.Status.EXPIRED)
            .values_list("user_id", flat=True)
        )
        Subscription.objects.filter(user_id__in=user_ids).update(status=Subscription.Status.EXPIRED)
        invalidate_subscriptions(user_ids=user_ids)
    return len(user_ids)


def invalidate_subscriptions(*, user_ids) -> None:
    invalidate(
        *(
            target
            for user_id in user_ids
            for target in (
                (registry.SUBSCRIPTION_USER, {"user_id": user_id}),
                (registry.SUBSCRIPTION_STATS, {"user_id": user_id}),
            )
        )
    )
