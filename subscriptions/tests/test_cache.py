"""The subscription families' bulk loaders (warm-up) give every key exactly what its loader gives it."""

from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from core.clock import day_start
from subscriptions.cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER
from tests.support.harness import loaded_both_ways

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def varied(make_user, plans):
    """Users in every state the values distinguish, with usage and ledger rows around the edges."""
    from accounts.models import CoinLedgerEntry
    from subscriptions.models import DailyUsage, Subscription

    now = timezone.now()
    today = day_start(now).date()

    def spend(user, amount, *, at=None, reason=CoinLedgerEntry.Reason.SPEND):
        CoinLedgerEntry.objects.create(user=user, amount=amount, reason=reason, balance_after=0,
                                       created_at=at or timezone.now())

    free = make_user("free@example.com")  # the free plan, no usage, no spend
    plus = make_user("plus@example.com", plan="plus")
    DailyUsage.objects.create(user=plus, day=today, generations=2, messages=3)
    DailyUsage.objects.create(user=plus, day=today - timedelta(days=1), generations=9, messages=9)
    start = Subscription.objects.get(user=plus).current_period_start
    spend(plus, -10, at=start + timedelta(seconds=1))
    spend(plus, 4, reason=CoinLedgerEntry.Reason.REFUND)
    spend(plus, -50, at=start - timedelta(seconds=1))  # before the period: not counted
    spend(plus, 100, reason=CoinLedgerEntry.Reason.GRANT)  # not a spend

    expired = make_user("expired@example.com", plan="pro")
    Subscription.objects.filter(user=expired).update(
        current_period_start=now - timedelta(days=40), current_period_end=now - timedelta(days=10))
    spend(expired, -7, at=now - timedelta(days=20))

    downgrading = make_user("down@example.com", plan="pro")
    Subscription.objects.filter(user=downgrading).update(
        status=Subscription.Status.CANCELLED, auto_renew=False, next_plan=plans["free"])
    DailyUsage.objects.create(user=downgrading, day=today, generations=400, messages=0)  # over the limit

    refunded = make_user("refunded@example.com", plan="plus")
    spend(refunded, -3)
    spend(refunded, 5, reason=CoinLedgerEntry.Reason.REFUND)  # more back than spent

    unsubscribed = make_user("none@example.com")
    Subscription.objects.filter(user=unsubscribed).delete()
    spend(unsubscribed, -6)  # today: counted (no period, so the day is the period)
    spend(unsubscribed, -8, at=day_start(now) - timedelta(seconds=1))  # yesterday: not counted
    DailyUsage.objects.create(user=unsubscribed, day=today - timedelta(days=1), generations=1, messages=1)

    users = [free, plus, expired, downgrading, refunded, unsubscribed]
    return [{"user_id": user.id} for user in users] + [{"user_id": 999_999}, {"user_id": plus.id}]


def test_subscription_user_bulk_is_the_loader(varied):
    bulk, single = loaded_both_ways(SUBSCRIPTION_USER, varied)
    assert bulk == single
    assert set(bulk) == set(range(len(varied)))
    statuses = [orjson.loads(bulk[at])["status"] for at in range(len(varied))]
    assert statuses == ["active", "active", "expired", "cancelled", "active", "none", "none", "active"]
    assert orjson.loads(bulk[3])["next_plan"] == "free"


def test_subscription_stats_bulk_is_the_loader(varied):
    bulk, single = loaded_both_ways(SUBSCRIPTION_STATS, varied)
    assert bulk == single
    assert set(bulk) == set(range(len(varied)))
    stats = [orjson.loads(bulk[at]) for at in range(len(varied))]
    assert [s["coins_spent"] for s in stats] == [0, 6, 7, 0, 0, 6, 0, 6]
    assert [s["generations"]["used_today"] for s in stats] == [0, 2, 0, 400, 0, 0, 0, 2]
    assert stats[3]["generations"]["remaining"] == 0
    assert stats[2]["days_left"] == 0 and stats[2]["status"] == "expired"
