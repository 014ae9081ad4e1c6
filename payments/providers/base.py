"""What a payment provider does for us, and nothing else: create a checkout, charge a renewal,
verify and read a webhook event. Network calls to a real provider happen only in these methods."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal

# What our columns hold: the ids an event names (PaymentEvent, Payment), and an amount (8 digits, 2 decimals).
MAX_ID_LENGTH = 255
MAX_AMOUNT = Decimal("999999.99")
MAX_PAYMENT_ID = 2**63 - 1


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
    dispute: str = ""  # a chargeback's state it reports (Payment.Dispute: open, withdrawn, won, lost)

    def __post_init__(self) -> None:
        """Signed is not the same as valid: an event we could not store or compare is refused (400)
        on every delivery rather than failing (500) on every one, a poison event retried for days."""
        for name in ("id", "payment_ref", "payment_intent", "customer", "payment_method"):
            if len(getattr(self, name)) > MAX_ID_LENGTH:
                raise SignatureInvalid(f"malformed event: {name} is over {MAX_ID_LENGTH} characters")
        if self.amount is not None and not (self.amount.is_finite() and 0 <= self.amount <= MAX_AMOUNT):
            raise SignatureInvalid("malformed event: the amount is not an amount")
        if self.payment_id is not None and not 0 < self.payment_id <= MAX_PAYMENT_ID:
            raise SignatureInvalid("malformed event: no such payment id")


def _refuse_constant(name: str):
    raise SignatureInvalid(f"malformed event: {name} is not JSON")


def payload_load(body: bytes) -> dict:
    """A webhook body as JSON (UTF-8; NaN and Infinity refused), made storable: see payload_clean."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureInvalid("malformed event: the body is not UTF-8") from None
    try:
        payload = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        raise SignatureInvalid("malformed event") from None
    if not isinstance(payload, dict):
        raise SignatureInvalid("malformed event")
    return payload_clean(payload)


def payload_clean(value):
    """A parsed event made storable as it is: PostgreSQL text and jsonb cannot hold NUL, so each
    NUL in a string (or key) becomes U+FFFD (a customer's name may carry one; the event must still
    apply); a non-finite number cannot be stored or compared, so it is refused."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {payload_clean(key): payload_clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [payload_clean(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise SignatureInvalid("malformed event: a number is not finite")
    return value


class PaymentProvider(ABC):
    name: str

    @abstractmethod
    def checkout_create(self, *, payment, email: str, base_url: str) -> Checkout: ...

    @abstractmethod
    def checkout_close(self, *, payment) -> None:
        """Close a checkout we replaced, so it can no longer be paid (ProviderError if that failed)."""

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
