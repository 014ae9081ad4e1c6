"""Reads of plans, subscriptions and usage."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.db.models import QuerySet, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.cache import registry
from core.cache.store import Payload, fetch, fetch_data
from core.exceptions import PlanForbids
from core.formatting import iso_utc

from .models import Plan, Subscription


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


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.filter(is_active=True).order_by("sort_order", "id")


def day_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def subscription_payload(*, user_id: int) -> dict:
    """``subscription:user:{user_id}``: the current subscription, with its plan."""
    sub = Subscription.objects.select_related("plan", "next_plan").filter(user_id=user_id).first()
    if sub is None:
        return {"status": "none", "plan": None, "current_period_start": None,
                "current_period_end": None, "auto_renew": False, "next_plan": None}
    status = sub.status
    if sub.current_period_end <= timezone.now():
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
    if not end:
        return None  # no subscription, no period: the family's TTL applies
    return (parse_datetime(end) - timezone.now()).total_seconds()


def seconds_until_day_ends(data: dict) -> float:
    """Daily usage resets at midnight UTC: cached stats end with the day."""
    now = timezone.now()
    return (day_start(now) + timedelta(days=1) - now).total_seconds()


def subscription_stats_payload(*, user_id: int) -> dict:
    """``subscription:stats:{user_id}``: usage in the current period and today."""
    from accounts.models import CoinLedgerEntry
    from chat.models import ChatMessage
    from generation.models import Generation

    sub = subscription_payload(user_id=user_id)
    now = timezone.now()
    today = day_start(now)
    plan = sub["plan"] or {}
    generations_today = Generation.objects.filter(user_id=user_id, created_at__gte=today).exclude(
        status=Generation.Status.FAILED
    ).count()
    messages_today = ChatMessage.objects.filter(
        user_id=user_id, role=ChatMessage.Role.USER, created_at__gte=today
    ).count()
    period_start = parse_datetime(sub["current_period_start"]) if sub["current_period_start"] else today
    # Net of refunds: a failed generation gives its coins back and was not spent.
    spent = CoinLedgerEntry.objects.filter(
        user_id=user_id,
        reason__in=[CoinLedgerEntry.Reason.SPEND, CoinLedgerEntry.Reason.REFUND],
        created_at__gte=period_start,
    ).aggregate(total=Sum("amount"))["total"]
    end = parse_datetime(sub["current_period_end"]) if sub["current_period_end"] else None
    gen_limit = plan.get("daily_generation_limit", 0)
    msg_limit = plan.get("daily_message_limit", 0)
    return {
        "plan": plan.get("code"),
        "status": sub["status"],
        "day": today.date().isoformat(),
        "current_period_start": sub["current_period_start"],
        "current_period_end": sub["current_period_end"],
        # A fresh 30-day period shows 30, not 29: part of a day counts as a day.
        "days_left": max(0, math.ceil((end - now).total_seconds() / 86400)) if end else 0,
        "generations": {"used_today": generations_today, "daily_limit": gen_limit,
                        "remaining": max(0, gen_limit - generations_today)},
        "messages": {"used_today": messages_today, "daily_limit": msg_limit,
                     "remaining": max(0, msg_limit - messages_today)},
        "coins_spent": max(0, -(spent or 0)),
    }


def subscription_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    return fetch(registry.SUBSCRIPTION_USER, readahead=readahead, user_id=user_id)


def subscription_stats_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    return fetch(registry.SUBSCRIPTION_STATS, readahead=readahead, user_id=user_id)


def subscription_grants_access(data: dict, now: datetime | None = None) -> bool:
    """Active (or cancelled but paid up, or past due within its grace) and, whatever the cache
    says, not past its period end."""
    if data["status"] not in (Subscription.Status.ACTIVE, Subscription.Status.CANCELLED,
                              Subscription.Status.PAST_DUE):
        return False
    return parse_datetime(data["current_period_end"]) > (now or timezone.now())


def subscription_require(*, user_id: int, premium: bool = False) -> dict:
    """The plan of a subscription that allows this use, from the cache; PlanForbids otherwise."""
    data = fetch_data(registry.SUBSCRIPTION_USER, user_id=user_id)
    if not subscription_grants_access(data):
        raise PlanForbids("You have no active subscription.", code="no_active_subscription")
    if premium and not data["plan"]["includes_premium"]:
        raise PlanForbids("Your plan does not include premium characters.", code="premium_required")
    return data["plan"]
