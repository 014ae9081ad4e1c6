"""Webhooks: a signature or nothing; each event once (replays and 50 concurrent deliveries);
events out of order never move a payment backwards."""

import json
import time

import pytest
from django.test import Client

from accounts.models import User
from payments.models import Payment, PaymentEvent
from payments.providers import signature_header
from payments.providers.offline import CARD_OK, OfflineProvider
from payments.services import checkout_create
from subscriptions.models import Plan, Subscription
from tests.support.harness import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def payment(user, plans) -> Payment:
    return checkout_create(user_id=user.id, plan=plans["pro"], base_url="http://testserver/")


def event(payment, type="payment.succeeded", **kwargs):
    return OfflineProvider.event_build(payment=payment, type=type, customer=CARD_OK, **kwargs)


def nothing_changed(user) -> bool:
    return (
        User.objects.get(pk=user.pk).coin_balance == 30
        and Subscription.objects.get(user=user).plan.code == "free"
        and not PaymentEvent.objects.exists()
        and Payment.objects.get().status == "pending"
    )


def test_a_valid_signature_is_applied(payment, user, deliver):
    response = deliver(*event(payment))
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    assert Subscription.objects.get(user=user).plan.code == "pro"


@pytest.mark.parametrize("headers", [
    {},
    {"Offline-Signature": ""},
    {"Offline-Signature": "garbage"},
    {"Offline-Signature": "t=1,v1=00"},
])
def test_missing_or_bad_signature_is_400_and_writes_nothing(payment, user, deliver, headers):
    body, _ = event(payment)
    response = deliver(body, headers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    assert nothing_changed(user)


def test_wrong_secret_tampered_body_and_old_timestamp_are_refused(payment, user, deliver, settings):
    body, headers = event(payment)
    assert deliver(body, {"Offline-Signature": signature_header(body, "whsec_someone_else")}).status_code == 400
    tampered = body.replace(b'"29.99"', b'"0.01"')
    assert deliver(tampered, headers).status_code == 400
    old = signature_header(body, settings.PAYMENT_OFFLINE_WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)
    assert deliver(body, {"Offline-Signature": old}).status_code == 400
    assert nothing_changed(user)


def test_signed_but_unreadable_is_400(payment, user, deliver, settings):
    body = b'{"id": "evt_1", "type": "payment.succeeded"}'  # no data
    response = deliver(body, {"Offline-Signature": signature_header(body, settings.PAYMENT_OFFLINE_WEBHOOK_SECRET)})
    assert response.status_code == 400
    assert nothing_changed(user)


def test_a_provider_not_in_use_is_404(payment, user, deliver):
    body, headers = event(payment)
    assert deliver(body, headers, provider="stripe").status_code == 404
    assert deliver(body, headers, provider="nope").status_code == 404
    assert nothing_changed(user)


def test_only_post(payment, provider_client):
    assert provider_client.get("/api/payments/webhook/offline").status_code == 405


def test_csrf_does_not_apply(payment, user):
    body, headers = event(payment)
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/payments/webhook/offline", data=body, content_type="application/json",
                           HTTP_OFFLINE_SIGNATURE=headers["Offline-Signature"])
    assert response.status_code == 200


def test_a_replayed_event_grants_nothing_twice(payment, user, deliver):
    body, headers = event(payment)
    assert deliver(body, headers).json()["outcome"] == "applied"
    for _ in range(3):
        assert deliver(body, headers).json()["outcome"] == "duplicate"
    assert User.objects.get(pk=user.pk).coin_balance == 1530
    assert PaymentEvent.objects.count() == 1


def test_a_second_success_event_for_a_paid_payment_is_stale(payment, user, deliver):
    deliver(*event(payment))
    assert deliver(*event(payment)).json()["outcome"] == "stale"  # another event id, same payment
    assert User.objects.get(pk=user.pk).coin_balance == 1530


def test_a_late_failure_never_undoes_a_success(payment, user, deliver):
    deliver(*event(payment))
    assert deliver(*event(payment, type="payment.failed", reason="declined")).json()["outcome"] == "stale"
    assert Payment.objects.get().status == "succeeded"
    assert Subscription.objects.get(user=user).plan.code == "pro"


def test_a_refund_before_the_success_leaves_nothing_granted(payment, user, deliver):
    assert deliver(*event(payment, type="payment.refunded")).json()["outcome"] == "applied"
    assert deliver(*event(payment)).json()["outcome"] == "stale"
    assert Payment.objects.get().status == "refunded"
    assert Subscription.objects.get(user=user).plan.code == "free"
    assert User.objects.get(pk=user.pk).coin_balance == 30


def test_an_underpaid_event_does_not_activate(payment, user, deliver):
    assert deliver(*event(payment, amount="0.50")).json()["outcome"] == "amount_mismatch"
    assert Payment.objects.get().status == "pending"
    assert Subscription.objects.get(user=user).plan.code == "free"


def test_an_event_before_its_payment_is_recorded_applies_when_it_is(user, plans, deliver, monkeypatch, settings):
    from payments.providers import Checkout

    # The provider's event names a checkout we have not recorded yet (no payment id of ours).
    body = json.dumps({"id": "evt_early", "type": "payment.succeeded", "data": {
        "payment_id": None, "ref": "off_cs_early", "amount": "29.99", "currency": "usd", "customer": CARD_OK}}).encode()
    response = deliver(body, {"Offline-Signature": signature_header(body, settings.PAYMENT_OFFLINE_WEBHOOK_SECRET)})
    assert response.status_code == 200 and response.json()["outcome"] == "unmatched"
    assert Subscription.objects.get(user=user).plan.code == "free"

    monkeypatch.setattr(OfflineProvider, "checkout_create",
                        lambda self, **kw: Checkout(ref="off_cs_early", url="http://testserver/x"))
    checkout_create(user_id=user.id, plan=plans["pro"], base_url="http://testserver/")
    assert Subscription.objects.get(user=user).plan.code == "pro"
    assert PaymentEvent.objects.get().outcome == "applied"
    assert User.objects.get(pk=user.pk).coin_balance == 1530


def test_an_unrelated_event_is_acknowledged_and_ignored(payment, user, deliver, settings):
    body = json.dumps({"id": "evt_other", "type": "customer.updated", "data": {}}).encode()
    response = deliver(body, {"Offline-Signature": signature_header(body, settings.PAYMENT_OFFLINE_WEBHOOK_SECRET)})
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert Payment.objects.get().status == "pending"


@pytest.mark.slow
def test_fifty_concurrent_deliveries_of_one_event_activate_once(payment, user, redis_raw):
    body, headers = event(payment)
    signature = headers["Offline-Signature"]

    def deliver_once(i):
        response = Client().post("/api/payments/webhook/offline", data=body, content_type="application/json",
                                 HTTP_OFFLINE_SIGNATURE=signature)
        return response.status_code, response.json()["outcome"]

    results = run_concurrently(50, deliver_once)
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    outcomes = sorted(outcome for _, outcome in results)
    assert outcomes.count("applied") == 1 and outcomes.count("duplicate") == 49
    assert PaymentEvent.objects.count() == 1
    assert User.objects.get(pk=user.pk).coin_balance == 1530
    assert user.ledger.filter(reference="plan:pro").count() == 1
    assert Subscription.objects.get(user=user).plan == Plan.objects.get(code="pro")


@pytest.mark.slow
def test_concurrent_success_events_of_one_payment_activate_it_once(payment, user):
    """Different events saying the same thing (Stripe sends checkout.session.completed and
    payment_intent.succeeded at once): the payment row lock lets one apply, the rest are stale."""
    events = [event(payment) for _ in range(20)]

    def deliver_once(i):
        body, headers = events[i]
        response = Client().post("/api/payments/webhook/offline", data=body, content_type="application/json",
                                 HTTP_OFFLINE_SIGNATURE=headers["Offline-Signature"])
        return response.status_code, response.json()["outcome"]

    results = run_concurrently(20, deliver_once)
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    outcomes = [outcome for _, outcome in results]
    assert outcomes.count("applied") == 1 and outcomes.count("stale") == 19, outcomes
    assert PaymentEvent.objects.count() == 20
    assert User.objects.get(pk=user.pk).coin_balance == 1530
    assert user.ledger.filter(reference="plan:pro").count() == 1


def test_a_reader_inside_the_events_transaction_leaves_no_stale_cache(payment, user, alice, deliver, monkeypatch,
                                                                       redis_raw):
    """A request that reads (and caches) the subscription, stats and coins while the event's
    transaction is open sees the old rows; the deletes run after the commit, so the next reads
    are the new truth. Deleting before the commit would leave the old values cached."""
    from payments import services

    for url in ("/api/subscription", "/api/subscription/stats", "/api/me/coins"):
        assert alice.get(url).status_code == 200
    seen = {}
    original = services.subscription_period_start

    def start_then_read(**kwargs):
        sub = original(**kwargs)  # written, not committed: the plan and the coins
        [(plan, stats, coins)] = run_concurrently(1, lambda i: (
            alice.get("/api/subscription").json()["plan"]["code"],
            alice.get("/api/subscription/stats").json()["plan"],
            alice.get("/api/me/coins").json()["balance"],
        ))
        seen.update(plan=plan, stats=stats, coins=coins)
        return sub

    monkeypatch.setattr(services, "subscription_period_start", start_then_read)
    assert deliver(*event(payment)).json()["outcome"] == "applied"

    assert seen == {"plan": "free", "stats": "free", "coins": 30}  # the reader did run in the window
    assert alice.get("/api/subscription").json()["plan"]["code"] == "pro"
    assert alice.get("/api/subscription/stats").json()["plan"] == "pro"
    assert alice.get("/api/me/coins").json() == {"balance": 1530}


def signed(body: bytes, settings) -> dict:
    return {"Offline-Signature": signature_header(body, settings.PAYMENT_OFFLINE_WEBHOOK_SECRET)}


def test_a_body_that_is_not_utf8_is_400_signed_or_not(payment, user, deliver, settings):
    body = b"\xff\xfe"
    for headers in ({"Offline-Signature": f"t={int(time.time())},v1=00"}, signed(body, settings)):
        response = deliver(body, headers)
        assert response.status_code == 400 and response.json()["code"] == "invalid_signature"
    assert nothing_changed(user)


def payment_event(payment, **overrides) -> dict:
    data = {"payment_id": payment.pk, "ref": payment.provider_ref, "amount": "29.99", "currency": "usd",
            "customer": CARD_OK, "reason": ""}
    return {"id": "evt_poison", "type": "payment.succeeded", "created": int(time.time()), "data": data, **overrides}


@pytest.mark.parametrize("change", [
    {"id": "e" * 256},
    {"data_amount": "NaN"},
    {"data_amount": "Infinity"},
    {"data_amount": "-1"},
    {"data_amount": "1e400"},
    {"data_customer": "c" * 256},
    {"data_ref": "r" * 256},
    {"raw": b'{"id": "evt_nan", "type": "payment.succeeded", "data": {"payment_id": 1, "amount": NaN}}'},
], ids=["long_id", "nan", "infinity", "negative", "huge", "long_customer", "long_ref", "json_nan"])
def test_a_signed_but_invalid_event_is_400_and_writes_nothing(payment, user, deliver, settings, change):
    payload = payment_event(payment)
    for name, value in change.items():
        if name.startswith("data_"):
            payload["data"][name[5:]] = value
        elif name != "raw":
            payload[name] = value
    body = change.get("raw") or json.dumps(payload).encode()
    for _ in range(2):  # the same answer on every delivery
        response = deliver(body, signed(body, settings))
        assert response.status_code == 400 and response.json()["code"] == "invalid_signature"
    assert nothing_changed(user)


def test_nul_characters_in_a_signed_event_are_stored_safely_and_the_payment_applies(payment, user, deliver, settings):
    payload = payment_event(payment, id="evt_nul\u0000", note="a\u0000b")
    payload["data"]["reason"] = "\u0000"
    payload["data"]["customer"] = CARD_OK
    body = json.dumps(payload).encode()
    assert b"\\u0000" in body
    response = deliver(body, signed(body, settings))
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    stored = PaymentEvent.objects.get()
    assert "\x00" not in stored.event_id and "\x00" not in stored.payload["note"]
    assert Subscription.objects.get(user=user).plan.code == "pro"
    # A replay is still the same event: a duplicate, not a second one.
    assert deliver(body, signed(body, settings)).json()["outcome"] == "duplicate"


@pytest.mark.parametrize("secret", ["", "whsec_offline_development_only"], ids=["empty", "published_default"])
def test_an_empty_or_published_secret_verifies_nothing(payment, user, deliver, settings, secret):
    settings.PAYMENT_OFFLINE_WEBHOOK_SECRET = secret
    body = json.dumps(payment_event(payment)).encode()
    response = deliver(body, {"Offline-Signature": signature_header(body, secret)})
    assert response.status_code == 503 and response.json()["code"] == "payment_provider_unavailable"
    assert nothing_changed(user)
