"""The startup check of the payment settings: a configuration that could only fail requests (an
unknown provider, Stripe without its keys, a currency the payments table cannot hold) stops
``check``, ``migrate``, ``runserver`` and gunicorn's start (config/gunicorn.conf.py) with a message
naming the setting. The offline provider in production is refused earlier still, by the production
settings themselves (every process, checks or not)."""

from __future__ import annotations

import re

from django.core import checks

from .providers import PROVIDERS

TAG = "payments"
CURRENCY_CODE = re.compile(r"[A-Za-z]{3}")


def currency_valid(value) -> bool:
    """What Payment.currency holds and Stripe takes: a three-letter ISO 4217 code."""
    return isinstance(value, str) and CURRENCY_CODE.fullmatch(value) is not None


@checks.register(TAG)
def check_payment_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from django.conf import settings

    errors: list[checks.CheckMessage] = []
    provider = settings.PAYMENT_PROVIDER
    if provider not in PROVIDERS:
        errors.append(checks.Error(
            f"PAYMENT_PROVIDER {provider!r} is not a payment provider",
            hint=f"PAYMENT_PROVIDER={' or '.join(PROVIDERS)}", id="payments.E001"))
    elif provider == "stripe":
        if not settings.STRIPE_SECRET_KEY:
            errors.append(checks.Error(
                "PAYMENT_PROVIDER=stripe but STRIPE_SECRET_KEY is empty: every checkout and renewal charge would fail",
                hint="the secret (sk_...) or restricted (rk_...) key from the Stripe dashboard", id="payments.E002"))
        elif settings.STRIPE_SECRET_KEY.startswith(("pk_", "whsec_")):
            # Pasted from the wrong field: Stripe refuses a publishable key (or the webhook's
            # signing secret) on every server-side call, so every checkout would fail.
            errors.append(checks.Error(
                "STRIPE_SECRET_KEY is a publishable key or a webhook signing secret, not a secret key",
                hint="the secret (sk_...) or restricted (rk_...) key from the Stripe dashboard", id="payments.E006"))
        if not settings.STRIPE_WEBHOOK_SECRET:
            errors.append(checks.Error(
                "PAYMENT_PROVIDER=stripe but STRIPE_WEBHOOK_SECRET is empty: every Stripe event would be refused",
                hint="the signing secret (whsec_...) of the webhook endpoint /api/payments/webhook/stripe",
                id="payments.E003"))
    elif provider == "offline":
        from .providers.offline import secret_usable

        if not secret_usable(settings.PAYMENT_OFFLINE_WEBHOOK_SECRET):
            errors.append(checks.Error(
                "PAYMENT_PROVIDER=offline but PAYMENT_OFFLINE_WEBHOOK_SECRET is empty or a published default: "
                "anyone could sign payment events",
                hint="make run writes a random one into .env; or set it to secrets.token_urlsafe(50)",
                id="payments.E007"))
    currency = settings.PAYMENT_CURRENCY
    if not currency_valid(currency):
        errors.append(checks.Error(
            f"PAYMENT_CURRENCY {currency!r} is not a three-letter currency code",
            hint="an ISO 4217 code of a two-decimal currency, e.g. PAYMENT_CURRENCY=usd", id="payments.E004"))
    if settings.PAYMENT_GRACE_DAYS < 0 or settings.PAYMENT_RETRY_HOURS < 0:
        errors.append(checks.Error("PAYMENT_GRACE_DAYS and PAYMENT_RETRY_HOURS must not be negative",
                                   id="payments.E005"))
    return errors
