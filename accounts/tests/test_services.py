"""The coin ledger: invariant, database constraint, and concurrent spends on real PostgreSQL."""

from collections import Counter

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum

from accounts.models import CoinLedgerEntry, User
from accounts.services import coins_apply
from core.http.exceptions import PaymentRequired
from subscriptions.models import DailyUsage
from tests.support.harness import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)


def ledger_sum(user_id: int) -> int:
    return CoinLedgerEntry.objects.filter(user_id=user_id).aggregate(s=Sum("amount"))["s"] or 0


def balance(user_id: int) -> int:
    return User.objects.get(pk=user_id).coin_balance


def test_balance_equals_ledger_sum_after_mixed_operations(make_user):
    user = make_user("mix@example.com")  # 30 from the free plan
    coins_apply(user_id=user.id, amount=-10, reason="spend")
    coins_apply(user_id=user.id, amount=5, reason="refund")
    coins_apply(user_id=user.id, amount=100, reason="grant", idempotency_key="promo-1")
    coins_apply(user_id=user.id, amount=100, reason="grant", idempotency_key="promo-1")  # replay: no-op
    with pytest.raises(PaymentRequired):
        coins_apply(user_id=user.id, amount=-1000, reason="spend")
    coins_apply(user_id=user.id, amount=-125, reason="spend")
    assert balance(user.id) == 0
    assert ledger_sum(user.id) == 0
    entries = list(CoinLedgerEntry.objects.filter(user=user).order_by("id"))
    assert [e.amount for e in entries] == [30, -10, 5, 100, -125]
    # Each row records the balance it left behind, so the running sum matches.
    running = 0
    for entry in entries:
        running += entry.amount
        assert entry.balance_after == running


def test_idempotent_grant_returns_the_first_entry(make_user):
    user = make_user("idem@example.com")
    first = coins_apply(user_id=user.id, amount=7, reason="grant", idempotency_key="k")
    again = coins_apply(user_id=user.id, amount=7, reason="grant", idempotency_key="k")
    assert again.pk == first.pk
    assert balance(user.id) == 37


def test_short_balance_raises_and_writes_nothing(make_user):
    user = make_user("short@example.com", coins=3)
    before = CoinLedgerEntry.objects.filter(user=user).count()
    with pytest.raises(PaymentRequired):
        coins_apply(user_id=user.id, amount=-4, reason="spend")
    assert balance(user.id) == 3
    assert CoinLedgerEntry.objects.filter(user=user).count() == before


def test_zero_amount_is_rejected(make_user):
    from rest_framework.exceptions import ValidationError

    user = make_user("zero@example.com")
    with pytest.raises(ValidationError):
        coins_apply(user_id=user.id, amount=0, reason="grant")


def test_check_constraint_forbids_negative_balance(make_user):
    user = make_user("neg@example.com", coins=5)
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.filter(pk=user.id).update(coin_balance=-1)
    assert balance(user.id) == 5


def test_ledger_check_constraints(make_user):
    user = make_user("ledger@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        CoinLedgerEntry.objects.create(user=user, amount=0, reason="grant", balance_after=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        CoinLedgerEntry.objects.create(user=user, amount=-1, reason="spend", balance_after=-1)


@pytest.fixture
def rich_plan_user(make_user):
    """30 coins on a plan whose daily limit (300) is far above the 50 attempts."""
    return make_user("racer@example.com", coins=30, plan="pro")


@pytest.mark.slow
def test_fifty_concurrent_spends_against_thirty_coins(rich_plan_user, client_for):
    from generation.models import Generation, GenerationSettings

    GenerationSettings.objects.update_or_create(pk=1, defaults={"cost_per_generation": 1})
    user = rich_plan_user

    def spend(i: int):
        response = client_for(user).post("/api/generations", {"prompt": f"race {i}"}, format="json")
        return response.status_code

    statuses = run_concurrently(50, spend)
    assert Counter(statuses) == {202: 30, 402: 20}, statuses
    assert balance(user.id) == 0
    assert ledger_sum(user.id) == 0
    assert CoinLedgerEntry.objects.filter(user=user, reason="spend").count() == 30
    # A 402 leaves no generation behind, and its daily use is taken back with it.
    assert Generation.objects.filter(user=user).count() == 30
    assert DailyUsage.objects.get(user=user).generations == 30


@pytest.mark.slow
def test_fifty_concurrent_requests_with_one_idempotency_key_charge_once(rich_plan_user, client_for):
    from generation.models import Generation, GenerationSettings

    GenerationSettings.objects.update_or_create(pk=1, defaults={"cost_per_generation": 2})
    user = rich_plan_user

    def request(i: int):
        response = client_for(user).post(
            "/api/generations", {"prompt": "same"}, format="json", HTTP_IDEMPOTENCY_KEY="retry-123"
        )
        return response.status_code, response.json()["id"]

    results = run_concurrently(50, request)
    assert {status for status, _ in results} == {202}, results
    assert len({gen_id for _, gen_id in results}) == 1
    assert Generation.objects.filter(user=user).count() == 1
    assert CoinLedgerEntry.objects.filter(user=user, reason="spend").count() == 1
    assert balance(user.id) == 28
    assert ledger_sum(user.id) == 28


@pytest.mark.slow
def test_concurrent_registrations_of_one_email_create_one_user(plans):
    from rest_framework.test import APIClient

    from tests.support.fixtures import PASSWORD

    def register(i: int):
        email = "Race@Example.com" if i % 2 else "race@example.com "
        return APIClient().post("/api/auth/register", {"email": email, "password": PASSWORD}, format="json").status_code

    statuses = run_concurrently(10, register)
    assert Counter(statuses) == {201: 1, 400: 9}, statuses
    user = User.objects.get(email="race@example.com")
    assert User.objects.count() == 1
    assert balance(user.id) == 30 and ledger_sum(user.id) == 30
