"""The whole flow through the HTTP API with the offline provider: checkout, confirm, signed
webhook, subscription active and coins granted once, cached reads fresh right after the event."""

import pytest

from accounts.models import CoinLedgerEntry, User
from payments.models import Payment, PaymentEvent
from subscriptions.models import Subscription

pytestmark = pytest.mark.django_db(transaction=True)


def checkout(client, plan: str = "pro") -> dict:
    response = client.post("/api/subscription", {"plan": plan}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["checkout"]


def test_checkout_confirm_webhook_activates_once_and_cached_reads_follow(alice, user, provider_client, deliver,
                                                                       redis_raw):
    assert alice.get("/api/subscription").json()["plan"]["code"] == "free"
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert redis_raw.exists(f"subscription:user:{user.id}", f"user:coins:{user.id}") == 2

    pending = checkout(alice)
    assert pending["amount"] == "29.99" and pending["currency"] == "usd" and pending["provider"] == "offline"
    page = provider_client.get(pending["checkout_url"])
    assert page.status_code == 200 and page.json()["status"] == "pending" and page.json()["plan"] == "pro"

    # The provider confirms; its signed event is in hand but not yet delivered: nothing changed.
    confirmed = provider_client.post(pending["checkout_url"], {"outcome": "paid", "deliver": False}, format="json")
    assert confirmed.status_code == 200 and confirmed.json()["delivered"] is False
    assert alice.get("/api/subscription").json()["plan"]["code"] == "free"
    assert User.objects.get(pk=user.pk).coin_balance == 30

    body, signature = confirmed.json()["body"].encode(), confirmed.json()["signature"]
    hook = deliver(body, {"Offline-Signature": signature})
    assert hook.status_code == 200 and hook.json() == {"received": True, "outcome": "applied"}

    # Right after the event committed, the cached reads are the new truth.
    sub = alice.get("/api/subscription").json()
    assert sub["status"] == "active" and sub["plan"]["code"] == "pro"
    assert alice.get("/api/me/coins").json() == {"balance": 1530}
    assert alice.get("/api/subscription/stats").json()["plan"] == "pro"

    # A replay grants nothing twice.
    again = deliver(body, {"Offline-Signature": signature})
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert alice.get("/api/me/coins").json() == {"balance": 1530}
    payment = Payment.objects.get()
    assert payment.status == "succeeded" and payment.coins_granted == 1500 and payment.period_start is not None
    assert PaymentEvent.objects.get().outcome == "applied"
    assert CoinLedgerEntry.objects.filter(user=user, reference="plan:pro").count() == 1
    assert provider_client.get(pending["checkout_url"]).json()["status"] == "succeeded"


def test_declined_then_paid(alice, user, provider_client):
    pending = checkout(alice)
    declined = provider_client.post(pending["checkout_url"], {"outcome": "declined"}, format="json")
    assert declined.json()["outcome"] == "applied"
    assert Payment.objects.get().status == "failed"
    assert alice.get("/api/subscription").json()["plan"]["code"] == "free"
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    # Another card on the same checkout page.
    paid = provider_client.post(pending["checkout_url"], {"outcome": "paid"}, format="json")
    assert paid.json()["outcome"] == "applied"
    assert alice.get("/api/subscription").json()["plan"]["code"] == "pro"
    assert alice.get("/api/me/coins").json() == {"balance": 1530}


def test_a_failed_checkout_is_not_reused(alice, provider_client):
    first = checkout(alice)
    provider_client.post(first["checkout_url"], {"outcome": "declined"}, format="json")
    assert checkout(alice)["id"] != first["id"]


@pytest.mark.parametrize("payload, field", [
    ({"outcome": "maybe"}, "outcome"), ({}, "outcome"), ({"outcome": "paid", "card": "gold"}, "card"),
    # Strict: no coercion of "no" into False, no unknown field ignored.
    ({"outcome": "paid", "deliver": "no"}, "deliver"), ({"outcome": 1}, "outcome"),
    ({"outcome": "paid", "amount": 0}, "amount"),
])
def test_offline_checkout_rejects_bad_input(alice, provider_client, payload, field):
    pending = checkout(alice)
    response = provider_client.post(pending["checkout_url"], payload, format="json")
    assert response.status_code == 400 and "detail" in response.json()
    assert list(response.json()["errors"]) == [field]
    assert Payment.objects.get().status == "pending" and not PaymentEvent.objects.exists()


def test_unknown_checkout_is_404(provider_client, plans):
    response = provider_client.post("/api/payments/offline/checkout/off_cs_nope", {"outcome": "paid"}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_offline_checkout_is_gone_when_a_real_provider_is_configured(alice, provider_client, settings):
    pending = checkout(alice)
    settings.PAYMENT_PROVIDER = "stripe"
    assert provider_client.post(pending["checkout_url"], {"outcome": "paid"}, format="json").status_code == 404
    assert Payment.objects.get().status == "pending"


def test_checkout_needs_auth(api, plans):
    assert api.post("/api/subscription", {"plan": "pro"}, format="json").status_code == 401
    assert not Payment.objects.exists()


def test_provider_down_is_503_and_nothing_changes(alice, user, monkeypatch):
    from payments.providers import ProviderError
    from payments.providers.offline import OfflineProvider

    def down(self, **kwargs):
        raise ProviderError("timeout")

    monkeypatch.setattr(OfflineProvider, "checkout_create", down)
    response = alice.post("/api/subscription", {"plan": "pro"}, format="json")
    assert response.status_code == 503 and response.json()["code"] == "payment_provider_unavailable"
    assert Payment.objects.get().status == "failed"
    assert Subscription.objects.get(user=user).plan.code == "free"


def test_concurrent_requests_for_a_plan_make_one_pending_checkout(user, client_for, monkeypatch):
    import time

    from payments.providers.offline import OfflineProvider
    from tests.support.harness import run_concurrently

    slow_create = OfflineProvider.checkout_create

    def slow(self, **kwargs):  # a provider that takes a moment, as a real one does
        time.sleep(0.2)
        return slow_create(self, **kwargs)

    monkeypatch.setattr(OfflineProvider, "checkout_create", slow)
    clients = [client_for(user) for _ in range(8)]
    responses = run_concurrently(8, lambda i: clients[i].post("/api/subscription", {"plan": "pro"}, format="json"))
    assert [r.status_code for r in responses] == [202] * 8, responses
    assert len({r.json()["checkout"]["id"] for r in responses}) == 1
    assert Payment.objects.filter(status="pending").count() == 1 and Payment.objects.count() == 1


def test_a_reused_checkout_follows_a_price_change(alice, user, provider_client, plans):
    first = checkout(alice)
    assert first["amount"] == "29.99"
    plans["pro"].price = "39.99"
    plans["pro"].save()
    second = checkout(alice)
    assert second["id"] != first["id"] and second["amount"] == "39.99"
    # The old price can no longer be paid: only one pending checkout, at the current price.
    assert list(Payment.objects.filter(status="pending").values_list("pk", flat=True)) == [second["id"]]
    paid_old = provider_client.post(first["checkout_url"], {"outcome": "paid"}, format="json")
    assert paid_old.status_code == 409 and paid_old.json()["code"] == "checkout_closed"
    assert Subscription.objects.get(user=user).plan.code == "free"
    assert checkout(alice)["id"] == second["id"]  # unchanged price: the same checkout again


def test_asking_for_another_plan_replaces_the_open_checkout(alice, provider_client):
    pro = checkout(alice, "pro")
    plus = checkout(alice, "plus")
    assert plus["id"] != pro["id"]
    assert list(Payment.objects.filter(status="pending").values_list("pk", flat=True)) == [plus["id"]]
    assert provider_client.post(pro["checkout_url"], {"outcome": "paid"}, format="json").status_code == 409


def test_the_offline_page_refunds_a_paid_checkout_in_full_or_in_part(alice, user, provider_client):
    pending = checkout(alice)
    assert provider_client.post(pending["checkout_url"], {"outcome": "paid"}, format="json").json()["outcome"] == (
        "applied")
    part = provider_client.post(pending["checkout_url"], {"outcome": "refunded", "amount": "3.00"}, format="json")
    assert part.status_code == 200 and part.json()["outcome"] == "applied"
    assert alice.get("/api/me/coins").json() == {"balance": 1530 - 150}
    assert alice.get("/api/subscription").json()["status"] == "active"
    full = provider_client.post(pending["checkout_url"], {"outcome": "refunded"}, format="json")
    assert full.json()["outcome"] == "applied" and full.json()["event"]["type"] == "payment.refunded"
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/subscription").json()["status"] == "expired"
    assert Payment.objects.get().status == "refunded"


@pytest.mark.parametrize("payload", [
    {"outcome": "paid", "amount": "1.00"}, {"outcome": "refunded", "amount": "0"},
    {"outcome": "refunded", "amount": "NaN"}, {"outcome": "refunded", "amount": "1e9"},
])
def test_an_amount_is_only_for_a_refund_and_must_be_one(alice, provider_client, payload):
    pending = checkout(alice)
    response = provider_client.post(pending["checkout_url"], payload, format="json")
    assert response.status_code == 400 and list(response.json()["errors"]) == ["amount"]
    assert not PaymentEvent.objects.exists()
