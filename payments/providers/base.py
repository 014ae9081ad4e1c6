"""What a payment provider does for us, and nothing else: create a checkout, charge a renewal,
verify and read a webhook event. Network calls to a real provider happen only in these methods."""

from __future__ import annotations

import hashlib
import hmac
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal


class ProviderError(Exception):
    """The provider could not be reached or refused the request (not a declined card)."""


class SignatureInvalid(Exception):
    """A webhook without a valid signature (or a signed but unreadable one): 400, nothing written."""


@dataclass(frozen=True)
class Checkout:
    ref: str  # the provider's id of the checkout
    url: str  # where the user pays


@dataclass(frozen=True)
class Charge:
    succeeded: bool
    ref: str = ""
    reason: str = ""  # why it failed


@dataclass(frozen=True)
class Event:
    """A verified provider event, reduced to what moves a payment."""

    id: str
    type: str
    payload: dict
    outcome: str | None = None  # a Payment.Status it reports (succeeded, failed, refunded), or None: not ours
    payment_id: int | None = None  # our Payment id, when the provider echoes our metadata
    payment_ref: str = ""  # the provider's id of the object (checkout session, payment intent, charge)
    payment_intent: str = ""  # the provider's id of the money movement, when the event names it
    amount: Decimal | None = None  # paid (succeeded) or refunded so far (refunded)
    currency: str = ""
    customer: str = ""
    payment_method: str = ""
    reason: str = ""


class PaymentProvider(ABC):
    name: str

    @abstractmethod
    def checkout_create(self, *, payment, email: str, base_url: str) -> Checkout: ...

    @abstractmethod
    def renewal_charge(self, *, payment, previous) -> Charge:
        """Charge ``payment`` off-session with what ``previous`` (the last paid payment, or None) saved."""

    @abstractmethod
    def event_verify(self, *, body: bytes, headers) -> Event:
        """The event in ``body`` if its signature is valid; SignatureInvalid otherwise."""

    @abstractmethod
    def event_read(self, payload: dict) -> Event:
        """An event already verified and stored (PaymentEvent.payload), read again."""


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """``t=<unix time>,v1=<HMAC-SHA256 of "t.payload">``: Stripe's scheme, used by the offline
    provider too, so both are verified by the Stripe SDK's own code."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"
