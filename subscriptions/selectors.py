"""Reads of plans and subscriptions. The cached families live in subscriptions/cache.py."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.cache.store import Payload, fetch, peek
from core.exceptions import PlanForbids

from .cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER
from .models import Plan, Subscription


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.filter(is_active=True).order_by("sort_order", "id")


def subscription_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    return fetch(SUBSCRIPTION_USER, readahead=readahead, user_id=user_id)


def subscription_stats_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    return fetch(SUBSCRIPTION_STATS, readahead=readahead, user_id=user_id)


# The access rule, stated once as lookups on a subscription: subscription_grants_access checks a
# cached value against it, subscription_access_q puts it in a write's statement for a cold key.
_ACCESS_STATUSES = (Subscription.Status.ACTIVE, Subscription.Status.CANCELLED, Subscription.Status.PAST_DUE)


def _access_lookups(now: datetime) -> dict[str, object]:
    """Active (or cancelled but paid up, or past due within its grace) and not past its period end."""
    return {"status__in": _ACCESS_STATUSES, "current_period_end__gt": now}


_LOOKUP_HOLDS = {  # the lookups the rule may use, on a cached value (None: no subscription)
    "in": lambda value, allowed: value in allowed,
    "gt": lambda value, bound: value is not None and value > bound,
}


def subscription_access_q(now: datetime | None = None) -> Q:
    """The access rule on the subscription row (a write's statement, when the cached value is cold)."""
    return Q(**_access_lookups(now or timezone.now()))


def subscription_grants_access(data: dict, now: datetime | None = None) -> bool:
    """The access rule on a cached subscription (``subscription:user``): whatever the cached status
    says, the period end is compared with now."""
    for lookup, operand in _access_lookups(now or timezone.now()).items():
        field, op = lookup.split("__")
        value = data[field]
        if isinstance(operand, datetime) and value is not None:
            value = parse_datetime(value)
        if not _LOOKUP_HOLDS[op](value, operand):
            return False
    return True


def subscription_plan_cached(*, user_id: int, premium: bool = False) -> dict | None:
    """The plan of the user's subscription if ``subscription:user`` is cached (PlanForbids if it
    allows no use, or no premium use), None when it is not: never loads, the write's statement
    checks the row itself then (usage_consume)."""
    payload = peek(SUBSCRIPTION_USER, user_id=user_id)
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
