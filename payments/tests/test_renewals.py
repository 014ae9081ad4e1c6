"""The renewal job: due subscriptions are charged through the provider (free plans are not), a
failed charge is past due with a grace period, then expiry; coins only for paid periods."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import CoinLedgerEntry, User
from payments.models import Payment
from payments.providers import ProviderError
from payments.providers.offline import CARD_OK, OfflineProvider
from payments.services import plan_grant, renewals_run
from subscriptions.models import Plan, Subscription
from tests.support.harness import run_concurrently
from tests.support.payments import plan_pay

pytestmark = pytest.mark.django_db(transaction=True)


def end_period(user) -> None:
    Subscription.objects.filter(user=user).update(
        current_period_start=timezone.now() - timedelta(days=31), current_period_end=timezone.now() - timedelta(minutes=1)
    )
    CoinLedgerEntry.objects.filter(user=user).update(created_at=timezone.now() - timedelta(days=31))


def balance(user) -> int:
    return User.objects.get(pk=user.pk).coin_balance


def renew(capsys) -> str:
    call_command("subscriptions_renew")
    return capsys.readouterr().out.strip()


def test_due_subscriptions_are_charged_or_expire_and_the_api_shows_it(make_user, client_for, capsys):
    renewing = make_user("renew@example.com", plan="plus")
    leaving = make_user("leave@example.com", plan="plus")
    renew_client, leave_client = client_for(renewing), client_for(leaving)
    assert leave_client.post("/api/subscription/cancel").status_code == 200
    for user in (renewing, leaving):
        end_period(user)
    # Cached before the job runs: the job's writes must reach these keys.
    assert renew_client.get("/api/subscription").json()["status"] == "expired"
    assert renew_client.get("/api/me/coins").json() == {"balance": 330}

    assert renew(capsys) == "renewed 1, failed 0, expired 1, waiting events applied 0"

    renewed = renew_client.get("/api/subscription").json()
    assert renewed["status"] == "active" and renewed["plan"]["code"] == "plus"
    assert renew_client.get("/api/me/coins").json() == {"balance": 630}
    charge = Payment.objects.get(user=renewing, kind="renewal")
    assert charge.status == "succeeded" and charge.amount == plans_price("plus") and charge.coins_granted == 300
    assert leave_client.get("/api/subscription").json()["status"] == "expired"
    assert not Payment.objects.filter(user=leaving, kind="renewal").exists()

    # Nothing due: nothing charged or granted twice.
    assert renew(capsys) == "renewed 0, failed 0, expired 0, waiting events applied 0"
    assert balance(renewing) == 630 and Payment.objects.filter(kind="renewal").count() == 1


def plans_price(code: str):
    return Plan.objects.get(code=code).price


def test_a_free_plan_renews_without_a_payment(make_user, client_for, capsys):
    user = make_user("free@example.com")
    end_period(user)
    assert renew(capsys) == "renewed 1, failed 0, expired 0, waiting events applied 0"
    assert client_for(user).get("/api/subscription").json()["status"] == "active"
    assert balance(user) == 60 and not Payment.objects.exists()


def test_a_failed_charge_is_past_due_with_access_then_expires(make_user, client_for, capsys, characters, settings):
    settings.PAYMENT_GRACE_DAYS = 3
    user = make_user("declines@example.com")
    plan_pay(user_id=user.id, plan_code="plus", card="declines_renewals")
    client = client_for(user)
    end_period(user)
    client.get("/api/subscription")

    assert renew(capsys) == "renewed 0, failed 1, expired 0, waiting events applied 0"
    body = client.get("/api/subscription").json()
    assert body["status"] == "past_due" and body["plan"]["code"] == "plus"
    grace_end = Subscription.objects.get(user=user).current_period_end
    assert timedelta(days=2, hours=23) < grace_end - timezone.now() <= timedelta(days=3)
    assert balance(user) == 330  # no coins for an unpaid period
    assert Payment.objects.get(user=user, kind="renewal").failure_reason == "card declined"
    # Within the grace period the plan still works.
    assert client.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json").status_code == 202

    # Not retried before PAYMENT_RETRY_HOURS.
    assert renew(capsys) == "renewed 0, failed 0, expired 0, waiting events applied 0"

    Subscription.objects.filter(user=user).update(current_period_end=timezone.now() - timedelta(seconds=1))
    assert renew(capsys) == "renewed 0, failed 0, expired 1, waiting events applied 0"
    assert client.get("/api/subscription").json()["status"] == "expired"
    assert client.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json").status_code == 403
    assert balance(user) == 330 - 0  # the chat message is free; nothing granted


def test_past_due_is_retried_and_a_successful_retry_grants_the_period(make_user, client_for, capsys, settings):
    settings.PAYMENT_RETRY_HOURS = 24
    user = make_user("retry@example.com")
    paid = plan_pay(user_id=user.id, plan_code="plus", card="declines_renewals")
    end_period(user)
    assert renew(capsys) == "renewed 0, failed 1, expired 0, waiting events applied 0"
    # The user fixed their card; the last attempt is a day old.
    Payment.objects.filter(pk=paid.pk).update(provider_customer=CARD_OK)
    Payment.objects.filter(kind="renewal").update(created_at=timezone.now() - timedelta(hours=25))

    assert renew(capsys) == "renewed 1, failed 0, expired 0, waiting events applied 0"
    body = client_for(user).get("/api/subscription").json()
    assert body["status"] == "active" and body["plan"]["code"] == "plus"
    assert balance(user) == 630
    assert list(Payment.objects.filter(kind="renewal").order_by("id").values_list("status", flat=True)) == [
        "failed", "succeeded"]


def test_past_due_user_pays_a_checkout_to_come_back(make_user, client_for, capsys):
    user = make_user("comeback@example.com")
    plan_pay(user_id=user.id, plan_code="plus", card="declines_renewals")
    end_period(user)
    renew(capsys)
    client = client_for(user)
    assert client.post("/api/subscription", {"plan": "plus"}, format="json").status_code == 202
    plan_pay(user_id=user.id, plan_code="plus")
    assert client.get("/api/subscription").json()["status"] == "active"
    assert balance(user) == 630


def test_a_provider_outage_is_a_failed_attempt_not_an_expiry(make_user, capsys, monkeypatch):
    user = make_user("outage@example.com", plan="plus")
    end_period(user)

    def unreachable(self, **kwargs):
        raise ProviderError("connection refused")

    monkeypatch.setattr(OfflineProvider, "renewal_charge", unreachable)
    assert renew(capsys) == "renewed 0, failed 1, expired 0, waiting events applied 0"
    assert Subscription.objects.get(user=user).status == "past_due"
    assert Payment.objects.get(kind="renewal").failure_reason == "provider error: connection refused"


def test_a_scheduled_downgrade_is_what_renews(make_user, client_for, capsys):
    pro = make_user("pro@example.com", plan="pro")
    to_free = make_user("tofree@example.com", plan="pro")
    assert client_for(pro).post("/api/subscription", {"plan": "plus"}, format="json").status_code == 200
    assert client_for(to_free).post("/api/subscription", {"plan": "free"}, format="json").status_code == 200
    for user in (pro, to_free):
        end_period(user)
    assert renew(capsys) == "renewed 2, failed 0, expired 0, waiting events applied 0"

    body = client_for(pro).get("/api/subscription").json()
    assert body["plan"]["code"] == "plus" and body["next_plan"] is None
    assert Payment.objects.get(user=pro, kind="renewal").amount == plans_price("plus")
    assert balance(pro) == 1530 + 300
    assert client_for(to_free).get("/api/subscription").json()["plan"]["code"] == "free"
    assert not Payment.objects.filter(user=to_free, kind="renewal").exists()
    assert balance(to_free) == 1530 + 30


def test_a_staff_grant_does_not_renew_by_itself(make_user, capsys, plans):
    user = make_user("gift@example.com")
    plan_grant(user_id=user.id, plan=plans["pro"], reason="support ticket 42", granted_by_id=None)
    assert balance(user) == 1530
    end_period(user)
    assert renew(capsys) == "renewed 0, failed 0, expired 1, waiting events applied 0"
    assert not Payment.objects.exists()


@pytest.mark.slow
def test_overlapping_runs_charge_once(make_user):
    users = [make_user(f"overlap{i}@example.com", plan="plus") for i in range(3)]
    for user in users:
        end_period(user)
    results = run_concurrently(4, lambda i: renewals_run())
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r["renewed"] for r in results) == 3
    assert Payment.objects.filter(kind="renewal").count() == 3
    assert all(balance(user) == 630 for user in users)


@pytest.mark.parametrize("cancel_first", [False, True], ids=["past_due", "cancelled_while_past_due"])
def test_a_failed_renewal_never_resumes_without_a_payment(make_user, client_for, capsys, cancel_first):
    user = make_user(f"unpaid{int(cancel_first)}@example.com")
    plan_pay(user_id=user.id, plan_code="pro", card="declines_renewals")
    end_period(user)
    assert renew(capsys) == "renewed 0, failed 1, expired 0, waiting events applied 0"
    client = client_for(user)
    if cancel_first:
        assert client.post("/api/subscription/cancel").json()["status"] == "cancelled"

    response = client.post("/api/subscription", {"plan": "pro"}, format="json")
    assert response.status_code == 202 and response.json()["status"] == "payment_required"
    sub = Subscription.objects.get(user=user)
    assert sub.status == ("cancelled" if cancel_first else "past_due") and not (cancel_first and sub.auto_renew)
    # No later renewal failure hands out a fresh grace period either.
    Payment.objects.filter(kind="renewal").update(created_at=timezone.now() - timedelta(days=2))
    grace_end = sub.current_period_end
    renew(capsys)
    assert Subscription.objects.get(user=user).current_period_end == grace_end

    plan_pay(user_id=user.id, plan_code="pro")  # paying is the way back
    assert client.get("/api/subscription").json()["status"] == "active"
