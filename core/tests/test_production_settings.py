"""Production settings: `check --deploy` is clean, and there is no start without SECRET_KEY or
with a payment configuration that could only fail requests (`check` and gunicorn's start hook)."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BASE_DIR = Path(__file__).resolve().parents[2]


# Stripe (production's default provider) with both of its keys: a configuration that starts.
STRIPE_KEYS = {"STRIPE_SECRET_KEY": "sk_test_startup", "STRIPE_WEBHOOK_SECRET": "whsec_startup"}


def production_env(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DEBUG", "PAYMENT_OFFLINE_WEBHOOK_SECRET")}
    clean.update({"DJANGO_SETTINGS_MODULE": "config.settings.production", "ALLOWED_HOSTS": "example.com", **env})
    return clean


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=production_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_has_no_warnings():
    result = manage("check", "--deploy", SECRET_KEY=secrets.token_urlsafe(64), **STRIPE_KEYS)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.skipif((BASE_DIR / ".env").exists(), reason="a local .env may provide SECRET_KEY")
def test_refuses_to_start_without_secret_key():
    result = manage("check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "SECRET_KEY" in result.stderr


def test_weak_secret_key_is_flagged_by_check_deploy():
    # The guard above is only useful if a bad key is caught too: a short key fails the deploy check.
    result = manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY="short")
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_refuses_the_offline_payment_provider_unless_allowed():
    # With the offline provider anyone holding a checkout URL "pays": never by accident in production.
    key = secrets.token_urlsafe(64)
    refused = manage("check", SECRET_KEY=key, PAYMENT_PROVIDER="offline")
    assert refused.returncode != 0 and "PAYMENT_PROVIDER=offline" in refused.stderr
    allowed = manage("check", SECRET_KEY=key, PAYMENT_PROVIDER="offline", PAYMENT_OFFLINE_ALLOWED="true",
                     PAYMENT_OFFLINE_WEBHOOK_SECRET=secrets.token_urlsafe(50))
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("secret", [None, "", "whsec_offline_development_only", "whsec_offline_test_only", "short"])
def test_refuses_the_offline_provider_with_a_published_or_weak_secret(secret):
    env = {"SECRET_KEY": secrets.token_urlsafe(64), "PAYMENT_PROVIDER": "offline", "PAYMENT_OFFLINE_ALLOWED": "true"}
    if secret is not None:
        env["PAYMENT_OFFLINE_WEBHOOK_SECRET"] = secret
    refused = manage("check", **env)
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr and "PAYMENT_OFFLINE_WEBHOOK_SECRET" in refused.stderr


@pytest.mark.parametrize(("env", "errors"), [
    ({"STRIPE_SECRET_KEY": "", "STRIPE_WEBHOOK_SECRET": ""},
     ["payments.E002", "STRIPE_SECRET_KEY", "payments.E003", "STRIPE_WEBHOOK_SECRET"]),
    ({**STRIPE_KEYS, "STRIPE_SECRET_KEY": ""}, ["payments.E002", "STRIPE_SECRET_KEY"]),
    ({**STRIPE_KEYS, "STRIPE_WEBHOOK_SECRET": ""}, ["payments.E003", "STRIPE_WEBHOOK_SECRET"]),
    ({**STRIPE_KEYS, "PAYMENT_PROVIDER": "paypal"}, ["payments.E001", "PAYMENT_PROVIDER 'paypal'"]),
])
def test_a_payment_configuration_that_cannot_work_does_not_start(env, errors):
    # Stripe is production's default provider: without its keys every checkout or every event would fail.
    result = manage("check", SECRET_KEY=secrets.token_urlsafe(64), **env)
    assert result.returncode != 0
    assert all(error in result.stderr for error in errors), result.stderr
    assert manage("check", SECRET_KEY=secrets.token_urlsafe(64), **STRIPE_KEYS).returncode == 0


def test_gunicorn_refuses_to_start_with_the_checks_message():
    # on_starting's hook, as gunicorn's master calls it (the master itself imports no Django).
    hook = "import runpy; runpy.run_path('config/gunicorn.conf.py')['_check_settings']()"
    environment = production_env(SECRET_KEY=secrets.token_urlsafe(64))
    refused = subprocess.run([sys.executable, "-c", hook], cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
                             env={**environment, "STRIPE_SECRET_KEY": "", "STRIPE_WEBHOOK_SECRET": "whsec_startup"})
    assert refused.returncode != 0 and "payments.E002" in refused.stderr and "STRIPE_SECRET_KEY" in refused.stderr
    started = subprocess.run([sys.executable, "-c", hook], cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
                             env={**environment, **STRIPE_KEYS})
    assert started.returncode == 0, started.stderr
