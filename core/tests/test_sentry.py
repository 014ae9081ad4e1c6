"""Sentry is off unless SENTRY_DSN is set; set, an unhandled error reaches the DSN's server with the
request's ID as a tag (a real HTTP server stands in for Sentry's ingest)."""

import gzip
import http.server
import os
import subprocess
import sys
import zlib

import sentry_sdk
from django.conf import settings

from tests.support.harness import LoopbackHttpServer

RAISING_REQUEST = """
import django
django.setup()
from django.test import Client
from core.http import apis

def fail(self, request):
    raise RuntimeError("a failure for sentry")

apis.LivenessApi.get = fail
response = Client(raise_request_exception=False).get("/api/health/live")
print(response.status_code, response["X-Request-ID"])
import sentry_sdk
sentry_sdk.flush(10)
"""


class Ingest(LoopbackHttpServer):
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding", "")
                received.append(gzip.decompress(body) if encoding == "gzip"
                                else zlib.decompress(body) if encoding == "deflate" else body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def test_off_without_a_dsn():
    assert settings.SENTRY_DSN == ""
    assert not sentry_sdk.get_client().is_active()


def test_an_unhandled_error_reaches_sentry_with_the_request_id(tmp_path):
    ingest = Ingest()
    try:
        env = {**os.environ, "SENTRY_DSN": f"http://publickey@127.0.0.1:{ingest.port}/1",
               "DJANGO_SETTINGS_MODULE": "config.settings.test", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        result = subprocess.run([sys.executable, "-c", RAISING_REQUEST], cwd=settings.BASE_DIR, env=env,
                                capture_output=True, text=True, timeout=60)
        status, request_id = result.stdout.split()[-2:]
        assert status == "500", result.stderr
        events = [body for body in ingest.bodies if b"a failure for sentry" in body]
        assert events, ingest.bodies
        assert b'"request_id":"' + request_id.encode() + b'"' in events[0].replace(b": ", b":")
    finally:
        ingest.close()
