"""Refunds take the payment's coins back through the ledger, never below zero, and a full refund
of the current period ends it; the cached reads follow."""

import pytest

from accounts.models import CoinLedgerEntry, User
from accounts.services import coins_apply
from payments.providers.offline import OfflineProvider
from subscriptions.models import Subscription
from tests.support.payments import plan_pay

pytestmark = pytest.mark.django_db(transaction=True)


def refund(deliver, payment, amount=None):
    body, headers = OfflineProvider.event_build(payment=payment, type="payment.refunded", amount=amount)
    response = deliver(body, headers)
    assert response.status_code == 200
    payment.refresh_from_db()
    return response.json()["outcome"]


def balance(user) -> int:
    return User.objects.get(pk=user.pk).coin_balance


def test_a_full_refund_takes_the_coins_back_and_ends_the_period(alice, user, deliver):
    payment = plan_pay(user_id=user.id, plan_code="pro")
    assert alice.get("/api/me/coins").json() == {"balance": 1530}
    assert alice.get("/api/subscription").json()["plan"]["code"] == "pro"

    assert refund(deliver, payment) == "applied"
    assert payment.status == "refunded" and payment.coins_reversed == 1500 and payment.coins_unrecovered == 0
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/subscription").json()["status"] == "expired"
    reversal = CoinLedgerEntry.objects.get(user=user, reference=f"refund:payment:{payment.pk}")
    assert reversal.amount == -1500 and reversal.balance_after == 30

    assert refund(deliver, payment) == "stale"  # another refund event for it changes nothing
    assert balance(user) == 30


def test_coins_already_spent_are_not_taken_below_zero(alice, user, deliver):
    payment = plan_pay(user_id=user.id, plan_code="pro")
    coins_apply(user_id=user.id, amount=-1400, reason=CoinLedgerEntry.Reason.SPEND)
    assert balance(user) == 130

    assert refund(deliver, payment) == "applied"
    assert balance(user) == 0
    assert payment.coins_reversed == 130 and payment.coins_unrecovered == 1370
    assert alice.get("/api/me/coins").json() == {"balance": 0}


def test_partial_refunds_take_back_their_share(alice, user, deliver):
    payment = plan_pay(user_id=user.id, plan_code="pro")  # 29.99 for 1500 coins
    assert refund(deliver, payment, amount="15.00") == "applied"
    assert payment.status == "succeeded" and payment.coins_reversed == 750
    assert alice.get("/api/subscription").json()["status"] == "active"  # still paid in part
    assert refund(deliver, payment, amount="15.00") == "stale"  # the same total again: nothing
    assert refund(deliver, payment, amount="29.99") == "applied"
    assert payment.status == "refunded" and payment.coins_reversed == 1500
    assert balance(user) == 30
    assert alice.get("/api/subscription").json()["status"] == "expired"


def test_refunding_an_older_payment_leaves_a_newer_period_alone(alice, user, deliver):
    older = plan_pay(user_id=user.id, plan_code="plus")
    plan_pay(user_id=user.id, plan_code="pro")  # an upgrade: a new paid period
    refund(deliver, older)
    assert Subscription.objects.get(user=user).plan.code == "pro"
    assert alice.get("/api/subscription").json()["status"] == "active"
    assert balance(user) == 30 + 1500


def test_a_partial_refund_reported_before_the_payment_is_taken_from_its_grant(alice, user, deliver, plans):
    """Events out of order: the refund's event arrives before the payment's; once paid, the coins
    of the refunded share go back at once."""
    from payments.providers.offline import CARD_OK
    from payments.services import checkout_create

    payment = checkout_create(user_id=user.id, plan=plans["pro"], base_url="http://testserver/")
    assert refund(deliver, payment, amount="15.00") == "applied"
    assert payment.status == "pending" and balance(user) == 30

    body, headers = OfflineProvider.event_build(payment=payment, type="payment.succeeded", customer=CARD_OK)
    assert deliver(body, headers).json()["outcome"] == "applied"
    payment.refresh_from_db()
    assert payment.status == "succeeded" and payment.coins_granted == 1500 and payment.coins_reversed == 750
    assert alice.get("/api/me/coins").json() == {"balance": 30 + 750}
    assert refund(deliver, payment) == "applied"  # the rest later: the other share, not the first again
    assert payment.coins_reversed == 1500 and balance(user) == 30


def test_a_partial_refund_worth_the_days_left_ends_the_period(alice, user, deliver):
    payment = plan_pay(user_id=user.id, plan_code="pro")  # 29.99 for 30 days
    assert refund(deliver, payment, amount="29.98") == "applied"
    assert payment.status == "succeeded"  # a partial refund: the payment itself stays paid
    assert alice.get("/api/subscription").json()["status"] == "expired"
    assert balance(user) == 30 + 1  # 1500 * 29.98 / 29.99 taken back, rounded down


def test_a_partial_refund_late_in_the_period_ends_it_when_it_covers_the_rest(alice, user, deliver):
    from datetime import timedelta

    from django.utils import timezone

    payment = plan_pay(user_id=user.id, plan_code="pro")
    # 16 days used: 13 whole days left, worth 29.99 * 13 / 30 = 13.00; a refund of 13.00 covers them.
    Subscription.objects.filter(user=user).update(current_period_end=timezone.now() + timedelta(days=13, hours=12))
    assert refund(deliver, payment, amount="12.99") == "applied"
    assert alice.get("/api/subscription").json()["status"] == "active"
    assert refund(deliver, payment, amount="13.00") == "applied"
    assert alice.get("/api/subscription").json()["status"] == "expired"
