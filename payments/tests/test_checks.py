"""A bad payment configuration is a system check error at startup (payments.E001-E007, naming the
setting), and a request that meets one anyway is a 503 that changes nothing, never a 500.
(Startup itself, through `manage.py check` and gunicorn's hook: core/tests/test_production_settings.py.)"""

import pytest
from django.core import checks

from payments.models import Payment, PaymentEvent
from subscriptions.models import Subscription


def payment_errors() -> list[str]:
    return [f"{message.id} {message.msg}" for message in checks.run_checks(tags=["payments"])]


def test_the_development_defaults_pass(settings):
    assert settings.PAYMENT_PROVIDER == "offline"
    assert payment_errors() == []


def test_stripe_with_both_keys_passes(settings):
    settings.PAYMENT_PROVIDER = "stripe"
    settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET = "sk_test_x", "whsec_x"
    assert payment_errors() == []


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"PAYMENT_PROVIDER": "paypal"}, ["payments.E001 PAYMENT_PROVIDER 'paypal' is not a payment provider"]),
    ({"PAYMENT_PROVIDER": "Stripe"}, ["payments.E001 PAYMENT_PROVIDER 'Stripe' is not a payment provider"]),
    ({"PAYMENT_PROVIDER": ""}, ["payments.E001 PAYMENT_PROVIDER '' is not a payment provider"]),
    ({"PAYMENT_PROVIDER": "stripe", "STRIPE_WEBHOOK_SECRET": "whsec_x"}, ["payments.E002"]),
    ({"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "sk_test_x"}, ["payments.E003"]),
    ({"PAYMENT_PROVIDER": "stripe"}, ["payments.E002", "payments.E003"]),
    ({"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "pk_live_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"},
     ["payments.E006 STRIPE_SECRET_KEY is a publishable key or a webhook signing secret, not a secret key"]),
    ({"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "whsec_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"},
     ["payments.E006"]),
    ({"PAYMENT_CURRENCY": "dollars"}, ["payments.E004 PAYMENT_CURRENCY 'dollars' is not a three-letter currency code"]),
    ({"PAYMENT_CURRENCY": ""}, ["payments.E004"]),
    ({"PAYMENT_GRACE_DAYS": -1}, ["payments.E005"]),
    ({"PAYMENT_OFFLINE_WEBHOOK_SECRET": ""}, ["payments.E007 PAYMENT_PROVIDER=offline but PAYMENT_OFFLINE_WEBHOOK_SECRET"]),
    ({"PAYMENT_OFFLINE_WEBHOOK_SECRET": "whsec_offline_development_only"}, ["payments.E007"]),
    ({"PAYMENT_RETRY_HOURS": -1}, ["payments.E005"]),
])
def test_a_bad_payment_setting_is_a_check_error_naming_it(settings, overrides, expected):
    settings.STRIPE_SECRET_KEY = settings.STRIPE_WEBHOOK_SECRET = ""
    for name, value in overrides.items():
        setattr(settings, name, value)
    errors = payment_errors()
    assert [e.split()[0] for e in errors] == [e.split()[0] for e in expected], errors
    for error, wanted in zip(errors, expected, strict=True):
        assert error.startswith(wanted)
    for error in errors:  # the message names the setting to fix
        assert any(name in error for name in ("PAYMENT_PROVIDER", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET",
                                              "PAYMENT_CURRENCY", "PAYMENT_GRACE_DAYS")), error


def test_the_check_is_among_those_every_startup_runs(settings):
    # Untagged and not deploy-only: what `check`, `migrate`, runserver and gunicorn's hook run.
    settings.PAYMENT_PROVIDER = "paypal"
    assert "payments.E001" in [message.id for message in checks.run_checks()]


# --- a request that meets a bad configuration anyway: 503, nothing written ---------------------------


@pytest.mark.django_db(transaction=True)
def test_an_unknown_provider_is_503_not_500(alice, user, deliver, provider_client, settings):
    settings.PAYMENT_PROVIDER = "paypal"
    response = alice.post("/api/subscription", {"plan": "pro"}, format="json")
    assert response.status_code == 503 and response.json()["code"] == "payment_provider_unavailable"
    assert "paypal" not in response.content.decode()  # the setting is for the log, not the caller
    assert Subscription.objects.get(user=user).plan.code == "free" and not Payment.objects.exists()

    assert deliver(b"{}", {}, provider="paypal").status_code == 503
    assert deliver(b"{}", {}, provider="offline").status_code == 404  # not in use, as before
    assert provider_client.get("/api/payments/offline/checkout/off_cs_x").status_code == 404
    assert not PaymentEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_currency_the_table_cannot_hold_is_503_not_500(alice, user, settings):
    settings.PAYMENT_CURRENCY = "dollars"
    response = alice.post("/api/subscription", {"plan": "pro"}, format="json")
    assert response.status_code == 503 and response.json()["code"] == "payment_provider_unavailable"
    assert Subscription.objects.get(user=user).plan.code == "free" and not Payment.objects.exists()
