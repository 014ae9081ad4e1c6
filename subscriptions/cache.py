"""The subscription cache families, ``subscription:user:{user_id}`` and
``subscription:stats:{user_id}``: their values, their invalidation, and what warm-up fills.
Registered in SubscriptionsConfig.ready()."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import F, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import CoinLedgerEntry
from core.cache.api import (
    Change,
    KeyFamily,
    Parts,
    Version,
    WarmScope,
    connect_receivers,
    invalidate,
    invalidates,
    on,
    register,
)
from core.clock import day_start
from core.http.formatting import iso_utc

from .models import DailyUsage, Plan, Subscription


def plan_payload(plan: Plan) -> dict:
    return {
        "code": plan.code,
        "name": plan.name,
        "price": str(plan.price),
        "coins_per_period": plan.coins_per_period,
        "daily_generation_limit": plan.daily_generation_limit,
        "daily_message_limit": plan.daily_message_limit,
        "includes_premium": plan.includes_premium,
    }


def subscription_payload(*, user_id: int) -> dict:
    """``subscription:user:{user_id}``: the current subscription, with its plan."""
    sub = Subscription.objects.select_related("plan", "next_plan").filter(user_id=user_id).first()
    return _subscription_of(sub, now=timezone.now())


def subscription_payloads(parts_list: list[Parts]) -> dict[int, dict]:
    """subscription_payload for many keys (warm-up): one query."""
    ids = [parts["user_id"] for parts in parts_list]
    subs = {sub.user_id: sub for sub in Subscription.objects.select_related("plan", "next_plan").filter(user_id__in=set(ids))}
    now = timezone.now()
    return {at: _subscription_of(subs.get(user_id), now=now) for at, user_id in enumerate(ids)}


def _subscription_of(sub: Subscription | None, *, now: datetime) -> dict:
    if sub is None:
        return {"status": "none", "plan": None, "current_period_start": None,
                "current_period_end": None, "auto_renew": False, "next_plan": None}
    status = sub.status
    if sub.current_period_end <= now:
        status = Subscription.Status.EXPIRED
    return {
        "status": status,
        "plan": plan_payload(sub.plan),
        "current_period_start": iso_utc(sub.current_period_start),
        "current_period_end": iso_utc(sub.current_period_end),
        "auto_renew": sub.auto_renew,
        "next_plan": sub.next_plan.code if sub.next_plan else None,  # a downgrade from the period end
    }


def seconds_until_period_end(data: dict) -> float | None:
    """A cached subscription must not outlive its period."""
    end = data.get("current_period_end")
    ends = parse_datetime(end) if end else None
    if ends is None:
        return None  # no subscription, no period: the family's TTL applies
    return (ends - timezone.now()).total_seconds()


def seconds_until_day_ends(data: dict) -> float:
    """Daily usage resets at midnight UTC: cached stats end with the day."""
    now = timezone.now()
    return (day_start(now) + timedelta(days=1) - now).total_seconds()


def usage_today(*, user_id: int, now: datetime | None = None) -> dict[str, int]:
    """Generations and messages used today: the counters the limits are enforced on."""
    row = DailyUsage.objects.filter(user_id=user_id, day=day_start(now).date()).values(
        "generations", "messages").first()
    return _usage_of(row)


def _usage_of(row: Mapping[str, Any] | None) -> dict[str, int]:
    if row is None:
        return {"generations": 0, "messages": 0}
    return {"generations": row["generations"], "messages": row["messages"]}


# Net of refunds: a failed generation gives its coins back and was not spent.
_SPENT = (CoinLedgerEntry.Reason.SPEND, CoinLedgerEntry.Reason.REFUND)


def subscription_stats_payload(*, user_id: int) -> dict:
    """``subscription:stats:{user_id}``: usage in the current period and today."""
    sub = subscription_payload(user_id=user_id)
    now = timezone.now()
    today = day_start(now)
    used = usage_today(user_id=user_id, now=now)
    period_start = parse_datetime(sub["current_period_start"]) if sub["current_period_start"] else today
    spent = CoinLedgerEntry.objects.filter(
        user_id=user_id, reason__in=_SPENT, created_at__gte=period_start,
    ).aggregate(total=Sum("amount"))["total"]
    return _stats_of(sub, used=used, spent=spent, now=now)


def subscription_stats_payloads(parts_list: list[Parts]) -> dict[int, dict]:
    """subscription_stats_payload for many keys (warm-up): three queries, the period's spend of
    every user in one GROUP BY (from the period start, or today without a subscription)."""
    ids = [parts["user_id"] for parts in parts_list]
    subs = subscription_payloads(parts_list)
    now = timezone.now()
    today = day_start(now)
    usage = {row["user_id"]: row for row in DailyUsage.objects.filter(
        user_id__in=set(ids), day=today.date()).values("user_id", "generations", "messages")}
    spent = dict(
        CoinLedgerEntry.objects.filter(user_id__in=set(ids), reason__in=_SPENT)
        .alias(period_start=Coalesce("user__subscription__current_period_start", Value(today)))
        .filter(created_at__gte=F("period_start"))
        .order_by().values("user_id").annotate(total=Sum("amount")).values_list("user_id", "total")
    )
    return {at: _stats_of(subs[at], used=_usage_of(usage.get(user_id)), spent=spent.get(user_id), now=now)
            for at, user_id in enumerate(ids)}


def _stats_of(sub: dict, *, used: dict[str, int], spent: int | None, now: datetime) -> dict:
    today = day_start(now)
    plan = sub["plan"] or {}
    end = parse_datetime(sub["current_period_end"]) if sub["current_period_end"] else None
    gen_limit = plan.get("daily_generation_limit", 0)
    msg_limit = plan.get("daily_message_limit", 0)
    return {
        "plan": plan.get("code"),
        "status": sub["status"],
        "day": today.date().isoformat(),
        "current_period_start": sub["current_period_start"],
        "current_period_end": sub["current_period_end"],
        "days_left": _days_left(end, now),
        "generations": _use(used["generations"], gen_limit),
        "messages": _use(used["messages"], msg_limit),
        "coins_spent": max(0, -(spent or 0)),
    }


def _days_left(end: datetime | None, now: datetime) -> int:
    # A fresh 30-day period shows 30, not 29: part of a day counts as a day.
    return max(0, math.ceil((end - now).total_seconds() / 86400)) if end else 0


def _use(used: int, limit: int) -> dict[str, int]:
    return {"used_today": used, "daily_limit": limit, "remaining": max(0, limit - used)}


def stats_target(*, user_id: int) -> tuple[KeyFamily, Parts]:
    return (SUBSCRIPTION_STATS, {"user_id": user_id})


def stats_after_use(*, kind: str, day: date, coins: int = 0) -> Change:
    """``subscription:stats`` once one use of ``kind`` was counted on ``day`` (and ``coins`` spent
    with it): what subscription_stats_payload would load, worked out from the cached value
    (amend_after_commit). None, so the key is deleted instead, when the cached value is of another
    day or its period has ended: the loader decides those."""

    def change(stats: dict) -> dict | None:
        now = timezone.now()
        end = parse_datetime(stats["current_period_end"]) if stats["current_period_end"] else None
        if stats["day"] != day.isoformat() or day != day_start(now).date() or (end is not None and end <= now):
            return None
        return {
            **stats,
            "days_left": _days_left(end, now),
            kind: _use(stats[kind]["used_today"] + 1, stats[kind]["daily_limit"]),
            "coins_spent": stats["coins_spent"] + coins,
        }

    return change


def _user_ids_of(scope: WarmScope) -> Iterable[Parts]:
    return ({"user_id": user_id} for user_id in scope.user_ids)


# Both families embed plans (the subscription's plan and next plan, the stats' limits): a plan edit
# deletes this one key rather than two keys per subscriber. One version for the whole catalogue: a
# read cannot know its plan before it has the value, and plan edits are rare (the cost of one is
# at most one early reload per cached subscriber, as if their keys expired).
PLANS_VERSION = Version(name="plans:version", template="plans:version", holds="the version of the plans")

SUBSCRIPTION_USER = KeyFamily(
    name="subscription:user", template="subscription:user:{user_id}", ttl_setting="CACHE_TTL_SUBSCRIPTION_USER",
    default_ttl=300, loader=subscription_payload, bulk_loader=subscription_payloads, holds="the user's current subscription",
    ttl_cap=seconds_until_period_end, enumerate=_user_ids_of, tag="user_id", version=PLANS_VERSION,
)
SUBSCRIPTION_STATS = KeyFamily(
    name="subscription:stats", template="subscription:stats:{user_id}", ttl_setting="CACHE_TTL_SUBSCRIPTION_STATS",
    default_ttl=300, loader=subscription_stats_payload, bulk_loader=subscription_stats_payloads,
    holds="usage in the current period",
    ttl_cap=seconds_until_day_ends, enumerate=_user_ids_of, tag="user_id", version=PLANS_VERSION,
)


@invalidates(SUBSCRIPTION_USER, SUBSCRIPTION_STATS, when="expiry")
def invalidate_subscriptions(*, user_ids: Iterable[int]) -> None:
    """Bulk paths (expiry) that send no per-row signal."""
    invalidate(*(
        target
        for user_id in user_ids
        for target in ((SUBSCRIPTION_USER, {"user_id": user_id}), (SUBSCRIPTION_STATS, {"user_id": user_id}))
    ))


@invalidates(SUBSCRIPTION_STATS, when="a generation or chat message counted or given back")
def invalidate_usage(*, user_id: int) -> None:
    """A usage counter moved (a generation, a chat message, a refund of either)."""
    invalidate((SUBSCRIPTION_STATS, {"user_id": user_id}))


@invalidates(SUBSCRIPTION_USER, SUBSCRIPTION_STATS, triggers=[
    on("post_save", "subscriptions.Subscription"), on("post_delete", "subscriptions.Subscription")])
def flush_subscription(*, instance: Subscription, **kwargs: object) -> None:
    invalidate_subscriptions(user_ids=[instance.user_id])


@invalidates(SUBSCRIPTION_USER, SUBSCRIPTION_STATS, PLANS_VERSION, triggers=[
    on("post_save", "subscriptions.Plan"), on("post_delete", "subscriptions.Plan")])
def flush_plan_subscribers(**kwargs: object) -> None:
    # Cached subscriptions embed their plan: a plan edit reaches every subscriber's keys, through
    # one version key (one command after commit, one pending row if Redis is down).
    invalidate((PLANS_VERSION, {}))


@invalidates(SUBSCRIPTION_STATS, triggers=[on("post_save", "accounts.CoinLedgerEntry"),
                                           on("post_delete", "accounts.CoinLedgerEntry")])
def flush_stats_on_ledger_entry(*, instance: CoinLedgerEntry, **kwargs: object) -> None:
    """The stats show the coins spent in the period."""
    invalidate_usage(user_id=instance.user_id)


def connect() -> None:
    register(SUBSCRIPTION_USER, SUBSCRIPTION_STATS)
    connect_receivers(flush_subscription, flush_plan_subscribers, flush_stats_on_ledger_entry)
