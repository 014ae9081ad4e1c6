"""The renewal job: a subscription past its end renews (new period, the plan's coins once) or expires."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import CoinLedgerEntry, User
from subscriptions.models import Subscription

pytestmark = pytest.mark.django_db(transaction=True)


def end_period(user) -> None:
    Subscription.objects.filter(user=user).update(
        current_period_start=timezone.now() - timedelta(days=31), current_period_end=timezone.now() - timedelta(minutes=1)
    )
    CoinLedgerEntry.objects.filter(user=user).update(created_at=timezone.now() - timedelta(days=31))


def test_due_subscriptions_renew_or_expire_and_the_api_shows_it(make_user, client_for, capsys):
    renewing = make_user("renew@example.com", plan="plus")
    leaving = make_user("leave@example.com", plan="plus")
    renew_client, leave_client = client_for(renewing), client_for(leaving)
    assert leave_client.post("/api/subscription/cancel").status_code == 200
    for user in (renewing, leaving):
        end_period(user)
    # Cached before the job runs: the job's writes must reach these keys.
    assert renew_client.get("/api/subscription").json()["status"] == "expired"
    balance_before = User.objects.get(pk=renewing.pk).coin_balance

    call_command("subscriptions_renew")
    assert "renewed 1, expired 1" in capsys.readouterr().out

    renewed = renew_client.get("/api/subscription").json()
    assert renewed["status"] == "active"
    assert renewed["plan"]["code"] == "plus"
    assert User.objects.get(pk=renewing.pk).coin_balance == balance_before + 300
    assert renew_client.get("/api/me/coins").json() == {"balance": balance_before + 300}
    assert leave_client.get("/api/subscription").json()["status"] == "expired"
    assert Subscription.objects.get(user=leaving).status == "expired"

    call_command("subscriptions_renew")  # nothing due any more: nothing granted twice
    assert "renewed 0, expired 0" in capsys.readouterr().out
    assert User.objects.get(pk=renewing.pk).coin_balance == balance_before + 300
