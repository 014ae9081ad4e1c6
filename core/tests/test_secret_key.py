"""`make run` never signs with a published key: the first run writes a random SECRET_KEY (and a
random PAYMENT_OFFLINE_WEBHOOK_SECRET) into .env, and the local settings refuse to start without one."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BASE_DIR = Path(__file__).resolve().parents[2]


def make_secret_key(workdir: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("SECRET_KEY", "PAYMENT_OFFLINE_WEBHOOK_SECRET", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "-s", "-f", str(workdir / "Makefile"), "secret-key"], cwd=workdir,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True)


@pytest.fixture
def workdir(tmp_path) -> Path:
    shutil.copy(BASE_DIR / "Makefile", tmp_path / "Makefile")
    return tmp_path


def test_first_run_writes_a_random_key_and_later_runs_keep_it(workdir):
    make_secret_key(workdir)
    first = (workdir / ".env").read_text()
    assert re.fullmatch(r"SECRET_KEY=[A-Za-z0-9_-]{60,}\nPAYMENT_OFFLINE_WEBHOOK_SECRET=[A-Za-z0-9_-]{60,}\n",
                        first), first
    make_secret_key(workdir)
    assert (workdir / ".env").read_text() == first
    other = workdir / "other"
    other.mkdir()
    shutil.copy(workdir / "Makefile", other / "Makefile")
    make_secret_key(other)
    assert (other / ".env").read_text() != first  # random, not a published constant


def test_an_existing_env_file_is_extended_not_replaced(workdir):
    (workdir / ".env").write_text("DEBUG=true")  # no trailing newline
    make_secret_key(workdir)
    lines = (workdir / ".env").read_text().splitlines()
    assert lines[0] == "DEBUG=true" and lines[1].startswith("SECRET_KEY=") and len(lines) == 3
    assert lines[2].startswith("PAYMENT_OFFLINE_WEBHOOK_SECRET=")


def test_a_key_already_set_is_left_alone(workdir):
    make_secret_key(workdir, SECRET_KEY="from-the-environment", PAYMENT_OFFLINE_WEBHOOK_SECRET="from-it-too")
    assert not (workdir / ".env").exists()
    (workdir / ".env").write_text("SECRET_KEY=mine\nPAYMENT_OFFLINE_WEBHOOK_SECRET=mine-too\n")
    make_secret_key(workdir)
    assert (workdir / ".env").read_text() == "SECRET_KEY=mine\nPAYMENT_OFFLINE_WEBHOOK_SECRET=mine-too\n"
    (workdir / ".env").write_text("SECRET_KEY=mine\n")  # a checkout from before: only the missing one is added
    make_secret_key(workdir)
    lines = (workdir / ".env").read_text().splitlines()
    assert lines[0] == "SECRET_KEY=mine" and lines[1].startswith("PAYMENT_OFFLINE_WEBHOOK_SECRET=") and len(lines) == 2


def local(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "JWT_SIGNING_KEY", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
                          env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings.local", **env})


@pytest.mark.skipif((BASE_DIR / ".env").exists(), reason="a local .env may provide SECRET_KEY")
def test_local_settings_refuse_to_start_without_a_key():
    result = local("import django; django.setup()")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "SECRET_KEY" in result.stderr


def test_tokens_are_signed_with_the_configured_key():
    code = ("import django; django.setup(); from django.conf import settings; "
            "from rest_framework_simplejwt.settings import api_settings; "
            "print(api_settings.SIGNING_KEY == settings.SECRET_KEY == 'k' * 60)")
    result = local(code, SECRET_KEY="k" * 60)
    assert result.stdout.strip() == "True", result.stderr
