"""Reads of plans and subscriptions. The cached families live in subscriptions/cache.py."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.cache.store import Payload, fetch, fetch_data
from core.exceptions import PlanForbids

from .cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER
from .models import Plan, Subscription


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.filter(is_active=True).order_by("sort_order", "id")


def subscription_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    return fetch(SUBSCRIPTION_USER, readahead=readahead, user_id=user_id)


def subscription_stats_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    return fetch(SUBSCRIPTION_STATS, readahead=readahead, user_id=user_id)


def subscription_grants_access(data: dict, now: datetime | None = None) -> bool:
    """Active (or cancelled but paid up, or past due within its grace) and, whatever the cache
    says, not past its period end."""
    if data["status"] not in (Subscription.Status.ACTIVE, Subscription.Status.CANCELLED,
                              Subscription.Status.PAST_DUE):
        return False
    return parse_datetime(data["current_period_end"]) > (now or timezone.now())


def subscription_require(*, user_id: int, premium: bool = False) -> dict:
    """The plan of a subscription that allows this use, from the cache; PlanForbids otherwise."""
    data = fetch_data(SUBSCRIPTION_USER, user_id=user_id)
    if not subscription_grants_access(data):
        raise PlanForbids("You have no active subscription.", code="no_active_subscription")
    if premium and not data["plan"]["includes_premium"]:
        raise PlanForbids("Your plan does not include premium characters.", code="premium_required")
    return data["plan"]
