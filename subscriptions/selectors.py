"""Reads of plans and subscriptions. The cached families live in subscriptions/cache.py."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.cache.api import Payload, fetch, read_if_cached
from core.http.exceptions import PlanForbids

from .cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER
from .models import Plan, Subscription


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.filter(is_active=True).order_by("sort_order", "id")


def subscription_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    return fetch(SUBSCRIPTION_USER, readahead=readahead, user_id=user_id)


def subscription_stats_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    return fetch(SUBSCRIPTION_STATS, readahead=readahead, user_id=user_id)


# The access rule: active (or cancelled but paid up, or past due within its grace) and not past its
# period end. Two forms of it, on a cached value and on the row (a write's statement when the key
# is cold); test_selectors checks they agree for every status and period end.
_ACCESS_STATUSES = (Subscription.Status.ACTIVE, Subscription.Status.CANCELLED, Subscription.Status.PAST_DUE)


def subscription_access_q(now: datetime | None = None) -> Q:
    """The access rule on the subscription row."""
    return Q(status__in=_ACCESS_STATUSES, current_period_end__gt=now or timezone.now())


def subscription_grants_access(data: dict, now: datetime | None = None) -> bool:
    """The access rule on a cached subscription (``subscription:user``): whatever the cached status
    says, the period end is compared with now."""
    end = data["current_period_end"]
    return data["status"] in _ACCESS_STATUSES and end is not None and parse_datetime(end) > (now or timezone.now())


def subscription_plan_cached(*, user_id: int, premium: bool = False) -> dict | None:
    """The plan of the user's subscription if ``subscription:user`` is cached (PlanForbids if it
    allows no use, or no premium use), None when it is not: never loads, the write's statement
    reads the row itself then (usage_count)."""
    payload = read_if_cached(SUBSCRIPTION_USER, user_id=user_id)
    if payload is None:
        return None
    data = payload.data()
    if not subscription_grants_access(data):
        raise forbidden_no_subscription()
    if premium and not data["plan"]["includes_premium"]:
        raise forbidden_premium()
    return data["plan"]


def forbidden_no_subscription() -> PlanForbids:
    return PlanForbids("You have no active subscription.", code="no_active_subscription")


def forbidden_premium() -> PlanForbids:
    return PlanForbids("Your plan does not include premium characters.", code="premium_required")
