"""The payment provider chosen by ``PAYMENT_PROVIDER``."""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework.exceptions import APIException, NotFound

from .base import Charge, Checkout, Event, PaymentProvider, ProviderError, SignatureInvalid, signature_header

PROVIDERS = {
    "offline": "payments.providers.offline.OfflineProvider",
    "stripe": "payments.providers.stripe_provider.StripeProvider",
}

__all__ = ["Charge", "Checkout", "Event", "PaymentProvider", "ProviderError", "ProviderUnavailable",
           "SignatureInvalid", "provider_get", "signature_header"]

logger = logging.getLogger("payments")


class ProviderUnavailable(APIException):
    """503: the provider could not be reached, or this service is not configured to use it (the
    system check payments.E001-E007 refuses such settings at startup; this is what a request gets
    if they got past it): nothing was charged or recorded, the caller (or Stripe) tries again."""

    status_code = 503
    default_detail = "The payment provider is unavailable; nothing was charged. Try again later."
    default_code = "payment_provider_unavailable"


def provider_unconfigured(problem: str) -> ProviderUnavailable:
    """A 503 for a configuration that cannot serve; the setting is named in the log, not the answer."""
    logger.error("payments unavailable: %s (manage.py check names every bad payment setting)", problem)
    return ProviderUnavailable()


def provider_get(name: str | None = None) -> PaymentProvider:
    """The configured provider; another name (a webhook for a provider we do not use) is a 404:
    the offline provider's events must never be accepted where real money is taken."""
    from django.utils.module_loading import import_string

    configured = settings.PAYMENT_PROVIDER
    if name is not None and name != configured:
        raise NotFound(f"Payment provider {name!r} is not in use.")
    if configured not in PROVIDERS:
        raise provider_unconfigured(f"PAYMENT_PROVIDER {configured!r} is not a payment provider")
    return import_string(PROVIDERS[configured])()
