"""Test support: pay for a plan the way a user does, with the offline provider."""

from __future__ import annotations

from payments.models import Payment
from payments.providers.offline import CARD_DECLINES, CARD_OK, OfflineProvider
from payments.services import subscription_request, webhook_receive


def plan_pay(*, user_id: int, plan_code: str, card: str = "ok") -> Payment:
    """Ask for a paid plan (a checkout), then deliver the provider's signed "paid" event."""
    change, _, payment = subscription_request(user_id=user_id, plan_code=plan_code, base_url="http://testserver/")
    assert payment is not None, f"{plan_code} needs no payment here ({change})"
    body, headers = OfflineProvider.event_build(
        payment=payment, type="payment.succeeded", customer=CARD_DECLINES if card == "declines_renewals" else CARD_OK
    )
    webhook_receive(provider_name="offline", body=body, headers=headers)
    payment.refresh_from_db()
    return payment
