"""Production settings: `check --deploy` is clean, and there is no start without SECRET_KEY."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BASE_DIR = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DEBUG")}
    clean.update({"DJANGO_SETTINGS_MODULE": "config.settings.production", "ALLOWED_HOSTS": "example.com", **env})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=clean,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_has_no_warnings():
    result = manage("check", "--deploy", SECRET_KEY=secrets.token_urlsafe(64))
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
    assert manage("check", SECRET_KEY=key, PAYMENT_PROVIDER="offline", PAYMENT_OFFLINE_ALLOWED="true").returncode == 0
