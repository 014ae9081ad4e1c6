"""Writes of subscriptions. Subscribing grants the plan's coins through the ledger."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum
from typing import Literal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from rest_framework import exceptions

from accounts.models import CoinLedgerEntry, User
from accounts.services import coins_apply
from core.clock import day_start
from core.http.exceptions import PlanForbids

from .cache import invalidate_subscriptions, invalidate_usage
from .models import DailyUsage, Plan, Subscription
from .selectors import forbidden_no_subscription, forbidden_premium, subscription_access_q, subscription_plan_cached

UsageKind = Literal["generations", "messages"]

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


def _start(*, user_id: int, plan: Plan, grant_key: str | None = None, auto_renew: bool = True) -> Subscription:
    now = timezone.now()
    period = {
        "plan": plan,
        "status": Subscription.Status.ACTIVE,
        "current_period_start": now,
        "current_period_end": now + timedelta(days=settings.SUBSCRIPTION_PERIOD_DAYS),
        "auto_renew": auto_renew,
        "next_plan": None,
        "payment_failed": False,
    }
    sub, _ = Subscription.objects.update_or_create(user_id=user_id, defaults=period)
    if grant_key is not None:  # a paid (or staff-granted) period: its coins once, whatever else happened
        if plan.coins_per_period:
            coins_apply(user_id=user_id, amount=plan.coins_per_period, reason=CoinLedgerEntry.Reason.PLAN_GRANT,
                        reference=f"plan:{plan.code}", idempotency_key=grant_key)
        return sub
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


def subscription_start_free_for_new_user(*, instance: User, created: bool, raw: bool = False, **kwargs) -> None:
    """Every new user, however created (registration, createsuperuser, the admin), starts on
    the free plan in the transaction that creates them. Connected in SubscriptionsConfig.ready()."""
    if created and not raw:
        subscription_start_free(user_id=instance.pk)


class Change(StrEnum):
    """What a plan request did (subscription_change)."""

    UNCHANGED = "unchanged"
    STARTED = "started"  # a plan that needs no payment, from now
    RESUMED = "resumed"  # the same plan renews again (after a cancel or a scheduled downgrade)
    SCHEDULED = "scheduled"  # a cheaper plan from the period end
    PAYMENT_REQUIRED = "payment_required"  # nothing changed: take payment, then subscription_period_start


def plan_get_active(*, plan_code: str) -> Plan:
    plan = Plan.objects.filter(code=plan_code, is_active=True).first()
    if plan is None:
        raise exceptions.ValidationError({"plan": [f"Unknown plan {plan_code!r}."]}, code="unknown_plan")
    return plan


def _lock_user(user_id: int) -> None:
    User.objects.select_for_update().only("id").get(pk=user_id)  # one change at a time per user


def subscription_change(*, user_id: int, plan_code: str) -> tuple[Subscription | None, Change]:
    """Ask for a plan. Whatever needs no payment happens here; a paid period is never started here.

    Free plan: from now. A cheaper plan while a period runs: from its end. The plan you have: it
    renews again. A dearer or lapsed paid plan: PAYMENT_REQUIRED and nothing changed.
    """
    plan = plan_get_active(plan_code=plan_code)
    with transaction.atomic():
        _lock_user(user_id)
        current = Subscription.objects.select_related("plan").filter(user_id=user_id).first()
        running = (
            current is not None
            and current.status != Subscription.Status.EXPIRED
            and current.current_period_end > timezone.now()
        )
        if running and (current.status == Subscription.Status.PAST_DUE or current.payment_failed):
            # The current period is unpaid (past due, or cancelled while past due): nothing to keep
            # or resume until its end; only a payment brings a paid plan back.
            running = False
        if not running:
            if plan.price > 0:
                return current, Change.PAYMENT_REQUIRED
            return _start(user_id=user_id, plan=plan), Change.STARTED
        if plan.id == current.plan_id:
            if current.status == Subscription.Status.ACTIVE and current.auto_renew and current.next_plan_id is None:
                return current, Change.UNCHANGED
            current.status, current.auto_renew, current.next_plan = Subscription.Status.ACTIVE, True, None
            current.save(update_fields=["status", "auto_renew", "next_plan", "updated_at"])
            return current, Change.RESUMED
        if plan.price < current.plan.price:  # a downgrade: the paid period runs out first
            if current.next_plan_id == plan.id and current.auto_renew:
                return current, Change.UNCHANGED
            current.status, current.auto_renew, current.next_plan = Subscription.Status.ACTIVE, True, plan
            current.save(update_fields=["status", "auto_renew", "next_plan", "updated_at"])
            return current, Change.SCHEDULED
        return current, Change.PAYMENT_REQUIRED


def subscription_period_start(
    *, user_id: int, plan: Plan, grant_key: str | None = None, auto_renew: bool = True
) -> Subscription:
    """A new period on ``plan`` from now (paid, granted by staff, or a free renewal). With a
    ``grant_key`` the plan's coins are granted once per key; without, once per plan per period."""
    with transaction.atomic():
        _lock_user(user_id)
        return _start(user_id=user_id, plan=plan, grant_key=grant_key, auto_renew=auto_renew)


def subscription_cancel(*, user_id: int) -> Subscription:
    """Stop renewal; access lasts until the paid period ends."""
    with transaction.atomic():
        sub = Subscription.objects.select_for_update().filter(user_id=user_id).first()
        if sub is None:
            raise exceptions.NotFound("You have no subscription.")
        if sub.status in (Subscription.Status.ACTIVE, Subscription.Status.PAST_DUE):
            sub.status, sub.auto_renew, sub.next_plan = Subscription.Status.CANCELLED, False, None
            sub.save(update_fields=["status", "auto_renew", "next_plan", "updated_at"])
    return sub


def subscription_mark_past_due(*, user_id: int, until) -> Subscription:
    """The renewal charge failed: access goes on until ``until`` (the grace end), then expiry."""
    with transaction.atomic():
        sub = Subscription.objects.select_for_update().get(user_id=user_id)
        sub.status, sub.current_period_end, sub.payment_failed = Subscription.Status.PAST_DUE, until, True
        sub.save(update_fields=["status", "current_period_end", "payment_failed", "updated_at"])
    return sub


def subscription_end_now(*, user_id: int) -> Subscription | None:
    """The period was paid back (a refund): access ends now."""
    with transaction.atomic():
        sub = Subscription.objects.select_for_update().filter(user_id=user_id).first()
        if sub is not None and sub.status != Subscription.Status.EXPIRED:
            sub.status, sub.current_period_end, sub.auto_renew = Subscription.Status.EXPIRED, timezone.now(), False
            sub.save(update_fields=["status", "current_period_end", "auto_renew", "updated_at"])
    return sub


def subscription_period_restore(*, user_id: int, plan: Plan, period_start, until) -> Subscription | None:
    """A period that was taken back (a chargeback the merchant then won) runs again to ``until``,
    if the subscription is still that period and ``until`` is ahead; no renewal is turned on."""
    with transaction.atomic():
        sub = Subscription.objects.select_for_update().filter(user_id=user_id).first()
        if (sub is not None and sub.plan_id == plan.pk and sub.current_period_start == period_start
                and until > timezone.now()):
            sub.status, sub.current_period_end = Subscription.Status.ACTIVE, until
            sub.save(update_fields=["status", "current_period_end", "updated_at"])
    return sub


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


# --- usage: the one count behind daily limits and stats ----------------------------------------

def usage_count(*, user_id: int, kind: UsageKind, premium: bool = False) -> None:
    """Count one use of ``kind`` today if the user's plan allows it (a premium use if ``premium``)
    and its daily limit is not reached; PlanForbids (no_active_subscription, premium_required,
    the daily limit) when the use is refused, and nothing is counted. Runs in the caller's
    transaction: the count is taken back if the write that goes with it fails.

    The count is one conditional upsert, atomic under concurrency without a lock. A release
    finds the day from the written row's own time, ``day_start(created_at)``."""
    limit = _daily_limit(user_id=user_id, kind=kind, premium=premium)
    day = connection.ops.adapt_datefield_value(day_start().date())
    table = connection.ops.quote_name(DailyUsage._meta.db_table)
    other = "messages" if kind == "generations" else "generations"
    # One conditional upsert (PostgreSQL, SQLite 3.35+): the day's first use creates the row, a
    # later one counts only below the limit; no row comes back when the limit is reached. The
    # ORM has no conditional upsert.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, day, {kind}, {other}) VALUES (%s, %s, 1, 0)"
            f" ON CONFLICT (user_id, day) DO UPDATE SET {kind} = {table}.{kind} + 1"
            f" WHERE {table}.{kind} < %s RETURNING {kind}",
            [user_id, day, limit],
        )
        counted = cursor.fetchone() is not None
    if not counted:
        raise _limit_reached(kind)
    invalidate_usage(user_id=user_id)  # after commit: a rollback keeps the stats


def _daily_limit(*, user_id: int, kind: UsageKind, premium: bool) -> int:
    """The plan's daily limit of ``kind`` (PlanForbids when the plan allows no use of it): from
    ``subscription:user`` when it is cached (then no SQL), else from the subscription row under
    the same access rule (subscription_access_q), without loading the key for a write."""
    if kind not in ("generations", "messages"):
        raise ValueError(f"unknown usage kind {kind!r}")
    limit_field = f"daily_{kind[:-1]}_limit"
    cached = subscription_plan_cached(user_id=user_id, premium=premium)
    if cached is not None:
        limit = cached[limit_field]
    else:
        plan = (Subscription.objects.filter(subscription_access_q(), user_id=user_id)
                .values_list(f"plan__{limit_field}", "plan__includes_premium").first())
        if plan is None:
            raise forbidden_no_subscription()
        limit, includes_premium = plan
        if premium and not includes_premium:
            raise forbidden_premium()
    if limit <= 0:
        raise _limit_reached(kind)
    return limit


def _limit_reached(kind: UsageKind) -> PlanForbids:
    return PlanForbids(f"Daily {kind[:-1]} limit reached.", code=f"daily_{kind[:-1]}_limit")


def usage_release(*, user_id: int, kind: UsageKind, day: date) -> None:
    """Give back one use (a generation that failed and was refunded)."""
    if kind not in ("generations", "messages"):
        raise ValueError(f"unknown usage kind {kind!r}")
    DailyUsage.objects.filter(user_id=user_id, day=day, **{f"{kind}__gt": 0}).update(**{kind: F(kind) - 1})
    invalidate_usage(user_id=user_id)
