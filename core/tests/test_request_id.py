"""Request IDs: taken from a trusted header or generated, returned, and in every log line."""

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import override_settings

from core.http.request_id import RequestIdFilter

pytestmark = pytest.mark.django_db


@pytest.fixture
def log_lines():
    """What the configured console handler writes, line by line."""
    handler = next(h for h in logging.getLogger().handlers
                   if any(isinstance(f, RequestIdFilter) for f in h.filters))
    buffer = io.StringIO()
    old = handler.setStream(buffer)
    yield lambda: buffer.getvalue().splitlines()
    handler.setStream(old)


def test_a_request_without_an_id_gets_a_new_one(client):
    first = client.get("/api/health/live")["X-Request-ID"]
    second = client.get("/api/health/live")["X-Request-ID"]
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_an_id_from_the_trusted_header_is_kept_behind_a_trusted_proxy(client):
    assert client.get("/api/health/live", HTTP_X_REQUEST_ID="edge-7f3a.1")["X-Request-ID"] == "edge-7f3a.1"


def test_without_a_trusted_proxy_a_client_cannot_choose_its_id(client):
    # TRUSTED_PROXY_COUNT=0 (the default): the peer is the client itself, not a proxy that set the header.
    chosen = "00000000-0000-0000-0000-000000000000"
    got = client.get("/api/health/live", HTTP_X_REQUEST_ID=chosen)["X-Request-ID"]
    assert got != chosen and len(got) == 32


@override_settings(TRUSTED_PROXY_COUNT=1)
@pytest.mark.parametrize("bad", ["two words", "x" * 129, "new\nline", "ünïcode", ""])
def test_a_malformed_incoming_id_is_replaced(client, bad):
    got = client.get("/api/health/live", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
    assert got != bad and len(got) == 32


@override_settings(REQUEST_ID_TRUST_INCOMING=False, TRUSTED_PROXY_COUNT=1)
def test_incoming_ids_can_be_ignored(client):
    assert client.get("/api/health/live", HTTP_X_REQUEST_ID="chosen-by-client")["X-Request-ID"] != "chosen-by-client"


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_every_log_line_of_a_request_carries_its_id(client, log_lines):
    response = client.get("/api/nope", HTTP_X_REQUEST_ID="req-42")  # django.request logs the 404
    assert response.status_code == 404 and response["X-Request-ID"] == "req-42"
    logging.getLogger("outside").warning("after the request")
    lines = log_lines()
    assert [line for line in lines if "Not Found: /api/nope" in line] == [
        next(line for line in lines if "Not Found" in line)]  # once
    assert "[req-42]" in next(line for line in lines if "Not Found: /api/nope" in line)
    assert "[-]" in next(line for line in lines if "after the request" in line)


def emitting_handlers(logger_name: str, level: int) -> list[logging.Handler]:
    """The handlers a record of this logger reaches, after their filters."""
    record = logging.LogRecord(logger_name, level, __file__, 1, "x", None, None)
    logger: logging.Logger | None = logging.getLogger(logger_name)
    found = []
    while logger is not None:
        found += [h for h in logger.handlers
                  if level >= h.level and h.filter(record) and not type(h).__module__.startswith("_pytest")]
        if not logger.propagate:
            break
        logger = logger.parent
    return found


@override_settings(DEBUG=True)
def test_with_debug_a_django_request_line_is_written_once():
    assert len(emitting_handlers("django.request", logging.WARNING)) == 1
    assert len(emitting_handlers("django.db.backends", logging.WARNING)) == 1


def test_json_log_format_writes_one_object_per_line_with_the_request_id():
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    code = ("import django, logging\ndjango.setup()\n"
            "from core.http import request_id\nrequest_id.current.set('abc-1')\n"
            "logging.getLogger('core.cache').warning('cache %s', 'down')\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR, check=True,
                         capture_output=True, text=True).stderr
    record = json.loads(out.strip().splitlines()[-1])
    assert record["message"] == "cache down"
    assert record["request_id"] == "abc-1"
    assert record["levelname"] == "WARNING" and record["name"] == "core.cache"


def test_an_unknown_log_format_is_refused():
    env = {**os.environ, "LOG_FORMAT": "xml", "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env,
                            cwd=settings.BASE_DIR, capture_output=True, text=True)
    assert result.returncode != 0 and "LOG_FORMAT must be plain or json" in result.stderr
