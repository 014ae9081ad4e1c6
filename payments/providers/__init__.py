"""The payment provider chosen by ``PAYMENT_PROVIDER``."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import NotFound

from .base import Charge, Checkout, Event, PaymentProvider, ProviderError, SignatureInvalid, signature_header

PROVIDERS = {
    "offline": "payments.providers.offline.OfflineProvider",
    "stripe": "payments.providers.stripe_provider.StripeProvider",
}

__all__ = ["Charge", "Checkout", "Event", "PaymentProvider", "ProviderError", "SignatureInvalid",
           "provider_get", "signature_header"]


def provider_get(name: str | None = None) -> PaymentProvider:
    """The configured provider; another name (a webhook for a provider we do not use) is a 404:
    the offline provider's events must never be accepted where real money is taken."""
    from django.utils.module_loading import import_string

    configured = settings.PAYMENT_PROVIDER
    if name is not None and name != configured:
        raise NotFound(f"Payment provider {name!r} is not in use.")
    return import_string(PROVIDERS[configured])()
