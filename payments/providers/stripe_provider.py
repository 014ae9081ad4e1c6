"""Stripe through its official SDK. Checkout: a Checkout Session in payment mode that saves the
card for off-session renewals; renewals: an off-session PaymentIntent; events: verified with
``stripe.Webhook.construct_event`` and STRIPE_WEBHOOK_SECRET.

Amounts go to Stripe in minor units assuming two decimals (USD, EUR, RUB, ...).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import stripe
from django.conf import settings

from .base import (
    MAX_PAYMENT_ID,
    Charge,
    Checkout,
    Event,
    PaymentProvider,
    ProviderError,
    SignatureInvalid,
    payload_clean,
)

HEADER = "Stripe-Signature"


def to_minor(amount: Decimal | str) -> int:
    return int((Decimal(str(amount)) * 100).to_integral_value())


def from_minor(value) -> Decimal | None:
    return None if value is None else Decimal(value) / 100


def _metadata_payment_id(obj) -> int | None:
    metadata = obj.get("metadata") or {}
    raw = metadata.get("payment_id") or obj.get("client_reference_id")
    try:
        payment_id = int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    # Another integration's metadata is not ours: no match, rather than a refused event.
    return payment_id if payment_id is not None and 0 < payment_id <= MAX_PAYMENT_ID else None


def _id(value) -> str:
    """An expandable field: an id, an object with an id, or nothing."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value.get("id") or "")


class StripeProvider(PaymentProvider):
    name = "stripe"

    def _client(self) -> stripe.StripeClient:
        if not settings.STRIPE_SECRET_KEY:
            raise ProviderError("STRIPE_SECRET_KEY is not set")
        return stripe.StripeClient(settings.STRIPE_SECRET_KEY, max_network_retries=2)

    def checkout_create(self, *, payment, email: str, base_url: str) -> Checkout:
        metadata = {"payment_id": str(payment.id)}
        params = {
            "mode": "payment",
            "customer_email": email,
            "customer_creation": "always",
            "client_reference_id": str(payment.id),
            "metadata": metadata,
            # Saved for the renewal job's off-session charges.
            "payment_intent_data": {"metadata": metadata, "setup_future_usage": "off_session"},
            "line_items": [{
                "quantity": 1,
                "price_data": {
                    "currency": payment.currency,
                    "unit_amount": to_minor(payment.amount),
                    "product_data": {"name": f"{payment.plan.name}, {settings.SUBSCRIPTION_PERIOD_DAYS} days"},
                },
            }],
            "success_url": settings.PAYMENT_SUCCESS_URL,
            "cancel_url": settings.PAYMENT_CANCEL_URL,
        }
        try:
            session = self._client().v1.checkout.sessions.create(
                params=params, options={"idempotency_key": f"checkout-{payment.id}"}
            )
        except stripe.StripeError as exc:
            raise ProviderError(str(exc)) from None
        return Checkout(ref=session.id, url=session.url)

    def checkout_close(self, *, payment) -> None:
        try:  # an open session expires; one already paid or expired is an error we can ignore
            self._client().v1.checkout.sessions.expire(payment.provider_ref)
        except stripe.InvalidRequestError:
            pass
        except stripe.StripeError as exc:
            raise ProviderError(str(exc)) from None

    def renewal_charge(self, *, payment, previous) -> Charge:
        if previous is None or not previous.provider_customer or not previous.provider_payment_method:
            return Charge(succeeded=False, reason="no saved payment method")
        params = {
            "amount": to_minor(payment.amount),
            "currency": payment.currency,
            "customer": previous.provider_customer,
            "payment_method": previous.provider_payment_method,
            "off_session": True,
            "confirm": True,
            "metadata": {"payment_id": str(payment.id)},
        }
        try:
            intent = self._client().v1.payment_intents.create(
                params=params, options={"idempotency_key": f"renewal-{payment.id}"}
            )
        except stripe.CardError as exc:  # declined, or needs the customer (3-D Secure)
            return Charge(succeeded=False, reason=exc.user_message or str(exc))
        except stripe.StripeError as exc:
            raise ProviderError(str(exc)) from None
        if intent.status == "succeeded":
            return Charge(succeeded=True, ref=intent.id)
        return Charge(succeeded=False, ref=intent.id, reason=f"payment intent {intent.status}")

    def event_verify(self, *, body: bytes, headers) -> Event:
        if not settings.STRIPE_WEBHOOK_SECRET:  # our configuration, not the sender's fault: 503, Stripe retries
            from . import provider_unconfigured

            raise provider_unconfigured("STRIPE_WEBHOOK_SECRET is empty: Stripe events cannot be verified")
        header = headers.get(HEADER)
        if not header:
            raise SignatureInvalid("missing signature")
        try:
            event = stripe.Webhook.construct_event(body, header, settings.STRIPE_WEBHOOK_SECRET)
        except stripe.SignatureVerificationError as exc:
            raise SignatureInvalid(str(exc)) from None
        except ValueError:
            raise SignatureInvalid("malformed event") from None
        return self.event_read(payload_clean(event.to_dict()))

    def event_read(self, payload: dict) -> Event:
        try:
            return self._read(str(payload["id"]), str(payload["type"]), payload["data"]["object"], payload)
        except (KeyError, TypeError, AttributeError, ValueError, InvalidOperation):
            raise SignatureInvalid("malformed event") from None

    @staticmethod
    def _read(event_id: str, type: str, obj: dict, payload: dict) -> Event:
        common = {"id": event_id, "type": type, "payload": payload, "payment_id": _metadata_payment_id(obj),
                  "payment_ref": str(obj.get("id") or ""), "currency": str(obj.get("currency") or "")}
        if type.startswith("checkout.session."):
            outcome = {
                "checkout.session.completed": "succeeded" if obj.get("payment_status") == "paid" else None,
                "checkout.session.async_payment_succeeded": "succeeded",
                "checkout.session.async_payment_failed": "failed",
                "checkout.session.expired": "failed",
            }.get(type)
            return Event(**common, outcome=outcome, amount=from_minor(obj.get("amount_total")),
                         customer=_id(obj.get("customer")), payment_intent=_id(obj.get("payment_intent")),
                         reason="checkout expired" if type.endswith("expired") else "")
        if type.startswith("payment_intent."):
            outcome = {"payment_intent.succeeded": "succeeded", "payment_intent.payment_failed": "failed"}.get(type)
            error = obj.get("last_payment_error") or {}
            return Event(**common, outcome=outcome, amount=from_minor(obj.get("amount_received")),
                         customer=_id(obj.get("customer")), payment_method=_id(obj.get("payment_method")),
                         payment_intent=str(obj.get("id") or ""), reason=str(error.get("message") or ""))
        if type.startswith("charge.dispute."):
            # A Dispute object: it names the charge and the payment intent (which we know the payment by).
            dispute = {
                "charge.dispute.created": "open",
                "charge.dispute.funds_withdrawn": "withdrawn",
                "charge.dispute.funds_reinstated": "won",
                # warning_closed: an inquiry closed without a chargeback, nothing was taken.
                "charge.dispute.closed": {"won": "won", "warning_closed": "won", "lost": "lost"}.get(
                    str(obj.get("status") or ""), ""),
            }.get(type, "")
            return Event(**common, dispute=dispute, amount=from_minor(obj.get("amount")),
                         payment_intent=_id(obj.get("payment_intent")))
        if type == "charge.refunded":
            return Event(**common, outcome="refunded", amount=from_minor(obj.get("amount_refunded")),
                         payment_intent=_id(obj.get("payment_intent")))
        return Event(**common)
