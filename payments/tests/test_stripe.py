"""Stripe, offline: webhook signatures checked by the SDK's own construct_event with a test
secret; Stripe-shaped events drive the same flow; the SDK calls are stubbed (no network)."""

import hashlib
import hmac
import json
import time
from types import SimpleNamespace

import pytest
import stripe
from django.core.management import call_command
from django.test import Client

from accounts.models import CoinLedgerEntry, User
from accounts.services import coins_apply
from payments import services
from payments.models import Payment, PaymentEvent
from payments.providers import signature_header, stripe_provider
from payments.services import checkout_create, events_sweep, renewal_charge
from subscriptions.models import Subscription
from tests.support.harness import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec_test_0123456789abcdef"


def stripe_signature(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """What Stripe sends: t=<time>,v1=<hex HMAC-SHA256 of "<time>.<payload>"> (their documented scheme)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class FakeStripeClient:
    """Stands in for stripe.StripeClient: records the calls, answers like the API would."""

    calls: list = []
    intent_status = "succeeded"
    card_error: str | None = None

    def __init__(self, api_key, **kwargs):
        assert api_key == "sk_test_fake"
        self.v1 = SimpleNamespace(
            checkout=SimpleNamespace(sessions=SimpleNamespace(create=self._session, expire=self._expire)),
            payment_intents=SimpleNamespace(create=self._intent),
        )

    def _session(self, params, options):
        self.calls.append(("checkout", params, options))
        return SimpleNamespace(id="cs_test_123", url="https://checkout.stripe.com/c/pay/cs_test_123")

    def _expire(self, session):
        self.calls.append(("expire", session))

    def _intent(self, params, options):
        self.calls.append(("intent", params, options))
        if self.card_error:
            raise stripe.CardError(self.card_error, param=None, code="card_declined")
        return SimpleNamespace(id="pi_renewal_1", status=self.intent_status)


@pytest.fixture
def stripe_on(settings, monkeypatch):
    settings.PAYMENT_PROVIDER = "stripe"
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    FakeStripeClient.calls = []
    FakeStripeClient.intent_status, FakeStripeClient.card_error = "succeeded", None
    monkeypatch.setattr(stripe_provider.stripe, "StripeClient", FakeStripeClient)
    return FakeStripeClient


def stripe_event(type: str, obj: dict, event_id: str = "evt_1") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": type, "api_version": "2025-01-27",
                       "created": int(time.time()), "data": {"object": obj}}).encode()


def session_completed(payment, event_id="evt_cs"):
    return stripe_event("checkout.session.completed", {
        "id": "cs_test_123", "object": "checkout.session", "payment_status": "paid", "amount_total": 2999,
        "currency": "usd", "customer": "cus_1", "payment_intent": "pi_1", "client_reference_id": str(payment.pk),
        "metadata": {"payment_id": str(payment.pk)}}, event_id)


@pytest.fixture
def payment(stripe_on, user, plans):
    return checkout_create(user_id=user.id, plan=plans["pro"], base_url="http://testserver/")


def test_the_sdk_accepts_a_header_signed_the_way_stripe_signs():
    payload = stripe_event("ping", {"id": "x"})
    event = stripe.Webhook.construct_event(payload, stripe_signature(payload), SECRET)
    assert event.id == "evt_1" and event.type == "ping"
    # Our signer (used by the offline provider) is the same scheme: the SDK accepts it too.
    assert stripe.Webhook.construct_event(payload, signature_header(payload, SECRET), SECRET).id == "evt_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stripe_signature(payload, "whsec_other"), SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stripe_signature(payload, timestamp=int(time.time()) - 3600), SECRET)


def test_checkout_creates_a_stripe_session_with_our_payment_id(payment, stripe_on):
    kind, params, options = stripe_on.calls[0]
    assert kind == "checkout" and options == {"idempotency_key": f"checkout-{payment.pk}"}
    assert params["mode"] == "payment" and params["metadata"] == {"payment_id": str(payment.pk)}
    assert params["line_items"][0]["price_data"]["unit_amount"] == 2999
    assert params["payment_intent_data"]["setup_future_usage"] == "off_session"
    assert payment.provider == "stripe" and payment.provider_ref == "cs_test_123"
    assert payment.checkout_url == "https://checkout.stripe.com/c/pay/cs_test_123"


def test_a_signed_stripe_event_activates_the_plan(payment, user, deliver, alice):
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    body = session_completed(payment)
    response = deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    assert alice.get("/api/subscription").json()["plan"]["code"] == "pro"
    assert alice.get("/api/me/coins").json() == {"balance": 1530}
    payment.refresh_from_db()
    assert payment.provider_payment_ref == "pi_1" and payment.provider_customer == "cus_1"


@pytest.mark.parametrize("header", [None, "", "t=1,v1=abc", "nonsense"])
def test_missing_or_bad_stripe_signature_is_400(payment, user, deliver, header):
    body = session_completed(payment)
    response = deliver(body, {} if header is None else {"Stripe-Signature": header}, provider="stripe")
    assert response.status_code == 400 and response.json()["code"] == "invalid_signature"
    assert not PaymentEvent.objects.exists() and Subscription.objects.get(user=user).plan.code == "free"


def test_without_a_webhook_secret_every_event_is_refused_as_unavailable(payment, user, deliver, settings):
    # Our configuration, not the sender's fault (the system check payments.E003 refuses it at startup):
    # a 503 that Stripe retries, nothing written, not a 400 "missing signature".
    settings.STRIPE_WEBHOOK_SECRET = ""
    body = session_completed(payment)
    response = deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    assert response.status_code == 503 and response.json()["code"] == "payment_provider_unavailable"
    assert not PaymentEvent.objects.exists() and Subscription.objects.get(user=user).plan.code == "free"


def test_offline_events_are_refused_while_stripe_is_in_use(payment, user, deliver, settings):
    body = session_completed(payment)
    headers = {"Offline-Signature": signature_header(body, settings.PAYMENT_OFFLINE_WEBHOOK_SECRET)}
    assert deliver(body, headers, provider="offline").status_code == 404
    assert not PaymentEvent.objects.exists()


def test_the_payment_intent_event_saves_the_card_and_renewals_charge_it(payment, user, deliver, stripe_on):
    from datetime import timedelta

    from django.utils import timezone

    body = session_completed(payment)
    deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    intent = stripe_event("payment_intent.succeeded", {
        "id": "pi_1", "object": "payment_intent", "amount_received": 2999, "currency": "usd", "customer": "cus_1",
        "payment_method": "pm_card_1", "metadata": {"payment_id": str(payment.pk)}}, "evt_pi")
    assert deliver(intent, {"Stripe-Signature": stripe_signature(intent)}, provider="stripe").json()["outcome"] == "stale"
    payment.refresh_from_db()
    assert payment.provider_payment_method == "pm_card_1"

    Subscription.objects.filter(user=user).update(current_period_end=timezone.now() - timedelta(minutes=1))
    assert renewal_charge(user_id=user.id, now=timezone.now()) == "renewed"
    kind, params, options = stripe_on.calls[-1]
    assert kind == "intent" and params["customer"] == "cus_1" and params["payment_method"] == "pm_card_1"
    assert params["off_session"] is True and params["amount"] == 2999
    renewal = Payment.objects.get(kind="renewal")
    assert options == {"idempotency_key": f"renewal-{renewal.pk}"} and renewal.provider_ref == "pi_renewal_1"
    assert User.objects.get(pk=user.pk).coin_balance == 3030


def test_a_declined_renewal_card_is_past_due(payment, user, deliver, stripe_on):
    from datetime import timedelta

    from django.utils import timezone

    body = session_completed(payment)
    deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    Payment.objects.filter(pk=payment.pk).update(provider_payment_method="pm_1")
    Subscription.objects.filter(user=user).update(current_period_end=timezone.now() - timedelta(minutes=1))
    stripe_on.card_error = "Your card was declined."
    assert renewal_charge(user_id=user.id, now=timezone.now()) == "failed"
    assert Subscription.objects.get(user=user).status == "past_due"
    assert Payment.objects.get(kind="renewal").failure_reason == "Your card was declined."


def test_a_refund_event_is_matched_by_its_payment_intent(payment, user, deliver, alice):
    body = session_completed(payment)
    deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    refund = stripe_event("charge.refunded", {"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
                                              "amount_refunded": 2999, "currency": "usd"}, "evt_refund")
    assert deliver(refund, {"Stripe-Signature": stripe_signature(refund)}, provider="stripe").json()["outcome"] == "applied"
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/subscription").json()["status"] == "expired"


def test_a_refund_delivered_before_the_payment_applies_once_the_payment_is_known(payment, user, deliver, alice):
    """Out of order: charge.refunded names only the payment intent, which this service learns from
    the checkout's own event. Recorded as unmatched first, it applies when that event arrives."""
    refund = stripe_event("charge.refunded", {"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
                                              "amount_refunded": 2999, "currency": "usd"}, "evt_refund")
    assert deliver(refund, {"Stripe-Signature": stripe_signature(refund)}, provider="stripe").json()["outcome"] == (
        "unmatched")
    assert alice.get("/api/me/coins").json() == {"balance": 30}

    body = session_completed(payment)
    assert deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe").json()["outcome"] == "applied"
    assert PaymentEvent.objects.get(event_id="evt_refund").outcome == "applied"
    payment.refresh_from_db()
    assert payment.status == "refunded" and payment.coins_reversed == 1500
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/subscription").json()["status"] == "expired"


def test_a_refund_of_a_renewal_reported_while_it_is_charged_applies_after_the_charge(payment, user, deliver,
                                                                                      stripe_on, monkeypatch):
    """The refund's event names the renewal's payment intent before the renewal job has recorded
    that id (the job is still waiting for the charge's answer): it applies when the id is saved."""
    from datetime import timedelta

    from django.utils import timezone

    body = session_completed(payment)
    deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    Payment.objects.filter(pk=payment.pk).update(provider_payment_method="pm_1")
    Subscription.objects.filter(user=user).update(current_period_end=timezone.now() - timedelta(minutes=1))
    charge = FakeStripeClient._intent

    def charge_then_refund(self, params, options):
        intent = charge(self, params, options)
        refund = stripe_event("charge.refunded", {"id": "ch_2", "object": "charge", "payment_intent": intent.id,
                                                  "amount_refunded": 2999, "currency": "usd"}, "evt_refund_2")
        assert deliver(refund, {"Stripe-Signature": stripe_signature(refund)},
                       provider="stripe").json()["outcome"] == "unmatched"
        return intent

    monkeypatch.setattr(FakeStripeClient, "_intent", charge_then_refund)
    assert renewal_charge(user_id=user.id, now=timezone.now()) == "renewed"
    renewal = Payment.objects.get(kind="renewal")
    assert renewal.status == "refunded" and renewal.coins_reversed == 1500
    assert PaymentEvent.objects.get(event_id="evt_refund_2").payment == renewal
    assert User.objects.get(pk=user.pk).coin_balance == 1530
    assert Subscription.objects.get(user=user).status == "expired"


def test_an_unpaid_completed_session_waits_for_the_async_payment(payment, user, deliver):
    body = stripe_event("checkout.session.completed", {
        "id": "cs_test_123", "object": "checkout.session", "payment_status": "unpaid", "amount_total": 2999,
        "currency": "usd", "metadata": {"payment_id": str(payment.pk)}})
    assert deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe").json()["outcome"] == "ignored"
    assert Subscription.objects.get(user=user).plan.code == "free"
    later = stripe_event("checkout.session.async_payment_succeeded", {
        "id": "cs_test_123", "object": "checkout.session", "payment_status": "paid", "amount_total": 2999,
        "currency": "usd", "metadata": {"payment_id": str(payment.pk)}}, "evt_async")
    assert deliver(later, {"Stripe-Signature": stripe_signature(later)}, provider="stripe").json()["outcome"] == "applied"
    assert Subscription.objects.get(user=user).plan.code == "pro"


def test_checkout_without_an_api_key_is_503(stripe_on, alice, settings, user):
    settings.STRIPE_SECRET_KEY = ""
    response = alice.post("/api/subscription", {"plan": "pro"}, format="json")
    assert response.status_code == 503
    assert Subscription.objects.get(user=user).plan.code == "free"


# --- waiting events the periodic job sweeps up ----------------------------------------------------------

REFUND = {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount_refunded": 2999, "currency": "usd"}


def post_event(body: bytes):
    """A delivery from another worker: its own client, its own database connection (in a thread)."""
    return Client().post("/api/payments/webhook/stripe", data=body, content_type="application/json",
                         HTTP_STRIPE_SIGNATURE=stripe_signature(body))


def refund_stuck(payment, deliver, monkeypatch) -> None:
    """The race the sweep is for, made to happen: the refund (naming only the payment intent) and
    the checkout's event (which teaches the payment that intent) commit at the same moment. The
    checkout's replay ran before the refund's row existed; the refund looked for the intent before
    the payment's new id was committed. Each is blind to the other: the refund waits for good."""
    original, refund = services._events_replay_locked, stripe_event("charge.refunded", REFUND, "evt_refund")
    seen: list = []

    def replay_then_refund_commits(locked):
        applied = original(locked)  # the checkout's own replay: no refund yet
        if not seen:  # then, before this transaction commits, the refund is delivered and committed
            [response] = run_concurrently(1, lambda i: post_event(refund))
            seen.append(response.json()["outcome"])
        return applied

    monkeypatch.setattr(services, "_events_replay_locked", replay_then_refund_commits)
    body = session_completed(payment)
    assert deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe").json()["outcome"] == "applied"
    monkeypatch.setattr(services, "_events_replay_locked", original)
    assert seen == ["unmatched"]


def test_a_refund_committed_with_the_payments_own_event_waits_until_the_job_sweeps_it(payment, user, deliver, alice,
                                                                                      monkeypatch, capsys):
    refund_stuck(payment, deliver, monkeypatch)
    # Stuck: the payment knows the intent the refund names, yet the refund never applied.
    payment.refresh_from_db()
    assert payment.provider_payment_ref == "pi_1" and payment.status == "succeeded"
    assert PaymentEvent.objects.get(event_id="evt_refund").outcome == "unmatched"
    assert alice.get("/api/me/coins").json() == {"balance": 1530}

    call_command("subscriptions_renew")
    assert capsys.readouterr().out.strip() == "renewed 0, failed 0, expired 0, waiting events applied 1"
    refund_row = PaymentEvent.objects.get(event_id="evt_refund")
    assert refund_row.outcome == "applied" and refund_row.payment_id == payment.pk
    payment.refresh_from_db()
    assert payment.status == "refunded" and payment.coins_reversed == 1500
    assert alice.get("/api/me/coins").json() == {"balance": 30}  # the cached reads follow
    assert alice.get("/api/subscription").json()["status"] == "expired"

    call_command("subscriptions_renew")  # nothing waits any more: nothing applied twice
    assert capsys.readouterr().out.strip() == "renewed 0, failed 0, expired 0, waiting events applied 0"
    assert events_sweep() == 0
    assert CoinLedgerEntry.objects.filter(reference=f"refund:payment:{payment.pk}").count() == 1
    assert User.objects.get(pk=user.pk).coin_balance == 30


@pytest.mark.slow
def test_sweeps_racing_webhook_deliveries_apply_a_waiting_refund_once(payment, user, deliver, monkeypatch):
    """Sweeps (overlapping job runs) and deliveries of the payment's other events (each replays
    the payment's waiting events too) at once: the refund is applied by exactly one of them."""
    refund_stuck(payment, deliver, monkeypatch)
    intents = [stripe_event("payment_intent.succeeded", {
        "id": "pi_1", "object": "payment_intent", "amount_received": 2999, "currency": "usd", "customer": "cus_1",
        "metadata": {"payment_id": str(payment.pk)}}, f"evt_pi_{i}") for i in range(4)]

    def work(i):
        return events_sweep() if i % 2 else post_event(intents[i // 2]).json()["outcome"]

    results = run_concurrently(8, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r for r in results if isinstance(r, int)) <= 1
    assert sorted(r for r in results if isinstance(r, str)) == ["stale"] * 4
    refund_row = PaymentEvent.objects.get(event_id="evt_refund")
    assert refund_row.outcome == "applied" and refund_row.payment_id == payment.pk  # not re-applied as "stale"
    payment.refresh_from_db()
    assert payment.status == "refunded" and payment.coins_reversed == 1500 and payment.coins_unrecovered == 0
    assert CoinLedgerEntry.objects.filter(reference=f"refund:payment:{payment.pk}").count() == 1
    assert User.objects.get(pk=user.pk).coin_balance == 30
    assert events_sweep() == 0


def test_the_sweep_leaves_events_of_unknown_payments_waiting(payment, user, deliver, settings):
    body = session_completed(payment)
    deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    stranger = stripe_event("charge.refunded", {**REFUND, "id": "ch_other", "payment_intent": "pi_other"}, "evt_other")
    assert deliver(stranger, {"Stripe-Signature": stripe_signature(stranger)},
                   provider="stripe").json()["outcome"] == "unmatched"
    # A waiting offline event naming this payment's intent: another provider's, never this payment's.
    PaymentEvent.objects.create(provider="offline", event_id="evt_off", type="payment.refunded", payload={},
                                payment_intent="pi_1", outcome="unmatched")

    assert events_sweep() == 0
    assert PaymentEvent.objects.get(event_id="evt_other").outcome == "unmatched"
    assert PaymentEvent.objects.get(event_id="evt_off").outcome == "unmatched"
    payment.refresh_from_db()
    assert payment.status == "succeeded" and payment.coins_reversed == 0


def test_a_checkout_whose_customer_name_has_a_nul_still_activates(payment, user, deliver, alice):
    body = stripe_event("checkout.session.completed", {
        "id": "cs_test_123", "object": "checkout.session", "payment_status": "paid", "amount_total": 2999,
        "currency": "usd", "customer": "cus_1", "payment_intent": "pi_1", "client_reference_id": str(payment.pk),
        "customer_details": {"name": "Mallory\u0000", "email": "m@example.com"},
        "metadata": {"payment_id": str(payment.pk)}}, "evt_nul")
    response = deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    assert alice.get("/api/subscription").json()["plan"]["code"] == "pro"


@pytest.mark.parametrize("raw", [
    b'{"id": "evt_x", "object": "event", "type": "charge.refunded", "data": {"object": {"id": "ch_1",'
    b' "payment_intent": "pi_1", "amount_refunded": NaN}}}',
    json.dumps({"id": "e" * 300, "object": "event", "type": "ping", "data": {"object": {"id": "x"}}}).encode(),
], ids=["nan", "long_id"])
def test_a_signed_but_invalid_stripe_event_is_400(payment, user, deliver, raw):
    response = deliver(raw, {"Stripe-Signature": stripe_signature(raw)}, provider="stripe")
    assert response.status_code == 400 and response.json()["code"] == "invalid_signature"
    assert not PaymentEvent.objects.exists()


def test_a_replaced_checkout_is_expired_at_stripe(payment, stripe_on, plans):
    checkout_create(user_id=payment.user_id, plan=plans["plus"], base_url="http://testserver/")
    assert ("expire", "cs_test_123") in stripe_on.calls
    payment.refresh_from_db()
    assert payment.status == "failed" and payment.failure_reason == services.CHECKOUT_REPLACED


def dispute_event(type: str, status: str, event_id: str, amount: int = 2999) -> bytes:
    """A Stripe event about a Dispute object, as documented: it names the charge and the payment intent."""
    return stripe_event(type, {"id": "dp_1", "object": "dispute", "amount": amount, "currency": "usd",
                               "charge": "ch_1", "payment_intent": "pi_1", "reason": "fraudulent",
                               "status": status, "metadata": {}}, event_id)


def send(deliver, body: bytes) -> str:
    response = deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    assert response.status_code == 200, response.content
    return response.json()["outcome"]


def test_a_chargeback_takes_the_plan_and_coins_back_and_a_won_dispute_restores_them(payment, user, deliver, alice):
    assert send(deliver, session_completed(payment)) == "applied"
    period_end = Subscription.objects.get(user=user).current_period_end
    assert alice.get("/api/me/coins").json() == {"balance": 1530}

    assert send(deliver, dispute_event("charge.dispute.created", "needs_response", "evt_d1")) == "applied"
    assert alice.get("/api/me/coins").json() == {"balance": 1530}  # opened: no money moved yet

    withdrawn = dispute_event("charge.dispute.funds_withdrawn", "needs_response", "evt_d2")
    assert send(deliver, withdrawn) == "applied"
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/subscription").json()["status"] == "expired"
    assert send(deliver, withdrawn) == "duplicate"
    assert send(deliver, dispute_event("charge.dispute.funds_withdrawn", "needs_response", "evt_d2b")) == "stale"
    assert User.objects.get(pk=user.pk).coin_balance == 30

    assert send(deliver, dispute_event("charge.dispute.closed", "won", "evt_d3")) == "applied"
    assert alice.get("/api/me/coins").json() == {"balance": 1530}
    restored = alice.get("/api/subscription").json()
    assert restored["status"] == "active" and restored["plan"]["code"] == "pro"
    assert Subscription.objects.get(user=user).current_period_end == period_end
    # Stripe also reports the reinstated funds: the same win, applied once.
    assert send(deliver, dispute_event("charge.dispute.funds_reinstated", "won", "evt_d4")) == "stale"
    assert User.objects.get(pk=user.pk).coin_balance == 1530
    payment.refresh_from_db()
    assert payment.dispute == "won"


def test_a_lost_dispute_keeps_them_taken_even_without_a_withdrawal_event(payment, user, deliver, alice):
    send(deliver, session_completed(payment))
    coins_apply(user_id=user.id, amount=-1000, reason=CoinLedgerEntry.Reason.SPEND)  # spent some already
    assert send(deliver, dispute_event("charge.dispute.closed", "lost", "evt_lost")) == "applied"
    assert User.objects.get(pk=user.pk).coin_balance == 0  # never below zero
    assert alice.get("/api/subscription").json()["status"] == "expired"
    assert send(deliver, dispute_event("charge.dispute.closed", "won", "evt_late")) == "stale"  # lost is final
    assert User.objects.get(pk=user.pk).coin_balance == 0


def test_a_dispute_of_an_unknown_charge_waits_unmatched(payment, user, deliver):
    body = stripe_event("charge.dispute.funds_withdrawn", {"id": "dp_9", "object": "dispute", "amount": 100,
                                                           "currency": "usd", "charge": "ch_9",
                                                           "payment_intent": "pi_other", "status": "needs_response"},
                        "evt_other")
    assert send(deliver, body) == "unmatched"


def test_another_integrations_metadata_is_no_match_not_a_refusal(payment, deliver):
    body = stripe_event("payment_intent.succeeded", {
        "id": "pi_elsewhere", "object": "payment_intent", "amount_received": 100, "currency": "usd",
        "metadata": {"payment_id": "-7"}}, "evt_elsewhere")
    response = deliver(body, {"Stripe-Signature": stripe_signature(body)}, provider="stripe")
    assert response.status_code == 200 and response.json()["outcome"] == "unmatched"
