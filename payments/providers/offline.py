"""A provider that runs on a laptop: the checkout is our own endpoint that confirms or declines,
and its events are signed with PAYMENT_OFFLINE_WEBHOOK_SECRET exactly as Stripe signs its own.

Never for real money: anyone holding a checkout URL can confirm it (production settings refuse it
unless PAYMENT_OFFLINE_ALLOWED is set, for a trial).
"""

from __future__ import annotations

import json
import secrets
import time
from decimal import Decimal, InvalidOperation

import stripe
from django.conf import settings
from django.urls import reverse

from .base import Charge, Checkout, Event, PaymentProvider, SignatureInvalid, payload_load, signature_header

HEADER = "Offline-Signature"
# The "card" a confirmed checkout saves; renewals charge it. A declining card fails every renewal.
CARD_OK, CARD_DECLINES = "offline:card_ok", "offline:card_declines"
OUTCOMES = {"payment.succeeded": "succeeded", "payment.failed": "failed", "payment.refunded": "refunded"}
# The default this setting once had, published in the repository: it must never verify an event.
PUBLISHED_SECRETS = frozenset({"whsec_offline_development_only"})


def secret_usable(secret) -> bool:
    return isinstance(secret, str) and bool(secret) and secret not in PUBLISHED_SECRETS


def _secret() -> str:
    """The signing secret, or a 503 (our configuration, nothing written) when there is none to trust;
    the system check payments.E007 refuses such settings at startup."""
    secret = settings.PAYMENT_OFFLINE_WEBHOOK_SECRET
    if not secret_usable(secret):
        from . import provider_unconfigured

        raise provider_unconfigured("PAYMENT_OFFLINE_WEBHOOK_SECRET is empty or published: `make run` writes one")
    return secret


class OfflineProvider(PaymentProvider):
    name = "offline"

    def checkout_create(self, *, payment, email: str, base_url: str) -> Checkout:
        ref = f"off_cs_{secrets.token_urlsafe(18)}"
        return Checkout(ref=ref, url=base_url.rstrip("/") + reverse("payments-offline-checkout", args=[ref]))

    def checkout_close(self, *, payment) -> None:
        pass  # our own page refuses a replaced checkout (payments.apis.OfflineCheckoutApi)

    def renewal_charge(self, *, payment, previous) -> Charge:
        if previous is None or not previous.provider_customer:
            return Charge(succeeded=False, reason="no saved payment method")
        if previous.provider_customer == CARD_DECLINES:
            return Charge(succeeded=False, reason="card declined")
        return Charge(succeeded=True, ref=f"off_pi_{secrets.token_urlsafe(12)}")

    def event_verify(self, *, body: bytes, headers) -> Event:
        try:
            body.decode("utf-8")  # the SDK decodes it and would raise something else than its own error
        except UnicodeDecodeError:
            raise SignatureInvalid("malformed event: the body is not UTF-8") from None
        try:  # the Stripe SDK's verification: same scheme, our own secret
            stripe.WebhookSignature.verify_header(body, headers.get(HEADER), _secret(), tolerance=300)
        except stripe.SignatureVerificationError as exc:
            raise SignatureInvalid(str(exc)) from None
        return self.event_read(payload_load(body))

    def event_read(self, payload: dict) -> Event:
        try:
            data = payload["data"]
            amount = data.get("amount")
            return Event(
                id=str(payload["id"]), type=str(payload["type"]), payload=payload,
                outcome=OUTCOMES.get(payload["type"]),
                payment_id=int(data["payment_id"]) if data.get("payment_id") is not None else None,
                payment_ref=str(data.get("ref") or ""),
                amount=Decimal(str(amount)) if amount is not None else None,
                currency=str(data.get("currency") or ""), customer=str(data.get("customer") or ""),
                reason=str(data.get("reason") or ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation):
            raise SignatureInvalid("malformed event") from None

    @staticmethod
    def event_build(*, payment, type: str, customer: str = "", amount: Decimal | None = None,
                    reason: str = "") -> tuple[bytes, dict]:
        """A signed event as the offline 'provider' sends it: (body, headers)."""
        payload = {
            "id": f"evt_off_{secrets.token_hex(12)}",
            "type": type,
            "created": int(time.time()),
            "data": {"payment_id": payment.id, "ref": payment.provider_ref,
                     "amount": str(payment.amount if amount is None else amount),
                     "currency": payment.currency, "customer": customer, "reason": reason},
        }
        body = json.dumps(payload).encode()
        return body, {HEADER: signature_header(body, _secret())}
