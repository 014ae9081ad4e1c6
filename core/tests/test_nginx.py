"""deploy/nginx/chatart.conf.template on a real nginx (Debian package) in front of a real gunicorn
(config/gunicorn.conf.py, 2 sync workers) on the test database: slow clients no longer block the
API, nginx's own errors are JSON, and the client address reaches the throttles."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.harness import Gunicorn, free_port, request

ROOT = Path(settings.BASE_DIR)
TEMPLATE = ROOT / "deploy" / "nginx" / "chatart.conf.template"

def nginx_installed() -> bool:
    """nginx from Debian's package, installed here when missing and we may (root, as .ci/run does):
    these tests prove the config, so they should run, not skip, wherever they can."""
    if shutil.which("nginx") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], env=env, capture_output=True, timeout=600)
    return shutil.which("nginx") is not None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),  # gunicorn, another process, reads committed rows
]


@pytest.fixture(scope="module", autouse=True)
def nginx_binary():
    if not nginx_installed():
        pytest.skip("nginx is not installed (Debian package nginx) and cannot be installed here")


def render(template: str, values: dict[str, str]) -> str:
    """What the nginx image does at start (envsubst of the NGINX_* variables only)."""
    used = set(re.findall(r"\$\{(NGINX_[A-Z_]+)\}", template))
    assert used == set(values), used
    return re.sub(r"\$\{(NGINX_[A-Z_]+)\}", lambda m: values[m.group(1)], template)


class Nginx:
    """nginx as the current user, everything (pid, temp, logs) in a temp dir, on a free port."""

    def __init__(self, upstream: str, read_timeout: str = "35s") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="test-nginx-"))
        self.port = free_port()
        site = render(TEMPLATE.read_text(), {
            "NGINX_LISTEN": f"127.0.0.1:{self.port}",
            "NGINX_UPSTREAM": upstream,
            "NGINX_CLIENT_MAX_BODY_SIZE": str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
            "NGINX_PROXY_READ_TIMEOUT": read_timeout,
        })
        (self.dir / "chatart.conf").write_text(site)
        temp = "\n".join(f"    {name}_temp_path {self.dir / name};" for name in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # As root nginx would hand its workers to "nobody"; keep them as the current user.
        user = f"user {_user_name()};" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {self.dir / 'nginx.pid'};
error_log {self.dir / 'error.log'} info;
events {{ worker_connections 256; }}
http {{
{temp}
    access_log {self.dir / 'access.log'};
    include {self.dir / 'chatart.conf'};
}}
""")
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        log = self.log()
        self.close()
        raise AssertionError(f"nginx did not start: {log}")

    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def close(self) -> None:
        # SIGTERM to our own master, by its handle: it stops its workers too (SIGKILL would orphan them).
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def stalled_bodies(port: int, count: int) -> list[socket.socket]:
    """Clients that send headers and the first byte of a 1000-byte body, then nothing."""
    clients = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /api/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        clients.append(sock)
    time.sleep(0.5)  # let the server take them up
    return clients


def still_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)  # an answer, or b"" when the server closed it
        return False
    except BlockingIOError:
        return True  # nothing yet: the client still hangs
    finally:
        sock.setblocking(True)


@pytest.fixture(scope="module")
def gunicorn(django_db_setup, redis_server):
    from django.db import connection

    # The test database's name (pytest-django suffixes it per xdist worker).
    server = Gunicorn(connection.settings_dict["TEST"]["NAME"], redis_server.url,
                      TRUSTED_PROXY_COUNT="1", THROTTLE_AUTH="3/min")
    yield server
    server.close()


@pytest.fixture(scope="module")
def nginx(gunicorn):
    server = Nginx(f"127.0.0.1:{gunicorn.port}")
    yield server
    server.close()


def test_stalled_request_bodies_no_longer_block_the_api(gunicorn, nginx):
    # Directly, two sync workers are held by four clients that never finish their body...
    clients = stalled_bodies(gunicorn.port, 4)
    try:
        with pytest.raises(TimeoutError):
            request("127.0.0.1", gunicorn.port, "GET", "/api/health", timeout=3)
    finally:
        for sock in clients:
            sock.close()  # the workers read EOF and are free again
    # ... through nginx, the same clients wait at nginx, and the API answers at once.
    clients = stalled_bodies(nginx.port, 4)
    try:
        status, headers, body = request("127.0.0.1", nginx.port, "GET", "/api/health", timeout=5)
        assert status == 200 and json.loads(body)["database"]["status"] == "up"
        assert all(still_waiting(sock) for sock in clients)
    finally:
        for sock in clients:
            sock.close()


def test_a_body_over_the_limit_is_a_json_413_from_nginx(nginx):
    body = b'{"email": "a@example.com", "password": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'
    status, headers, raw = request("127.0.0.1", nginx.port, "POST", "/api/auth/token", body=body,
                                   headers={"Content-Type": "application/json"})
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw)["code"] == "request_too_large"


def test_overlong_uri_and_headers_are_json_414_and_431(gunicorn, nginx):
    # Bare gunicorn answers both with its own HTML page (what nginx is there to fix)...
    for path, extra in (("/api/health?" + "a" * 9000, {}), ("/api/health", {"X-Big": "b" * 9000})):
        status, headers, raw = request("127.0.0.1", gunicorn.port, "GET", path, headers=extra)
        assert status >= 400 and "json" not in headers.get("Content-Type", ""), (status, headers)
    # ... through nginx they are JSON like every API error.
    status, headers, raw = request("127.0.0.1", nginx.port, "GET", "/api/health?" + "a" * 9000)
    assert (status, headers["Content-Type"], json.loads(raw)["code"]) == (414, "application/json", "uri_too_long")
    status, headers, raw = request("127.0.0.1", nginx.port, "GET", "/api/health", headers={"X-Big": "b" * 9000})
    assert (status, headers["Content-Type"], json.loads(raw)["code"]) == (431, "application/json",
                                                                          "headers_too_large")


def health_through_nginx(upstream: str, **nginx_options):
    """GET /api/health through an nginx of its own in front of ``upstream``."""
    server = Nginx(upstream, **nginx_options)
    try:
        return request("127.0.0.1", server.port, "GET", "/api/health")
    finally:
        server.close()


def test_a_gunicorn_that_is_down_is_a_json_502():
    status, headers, raw = health_through_nginx(f"127.0.0.1:{free_port()}")  # nothing listens there
    assert status == 502
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw)["code"] == "bad_gateway"


def test_a_gunicorn_that_does_not_answer_is_a_json_504():
    # Connections are taken (the kernel's backlog) but nobody ever answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        status, headers, raw = health_through_nginx(f"127.0.0.1:{silent.getsockname()[1]}", read_timeout="1s")
    assert status == 504
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw)["code"] == "gateway_timeout"


def test_the_client_address_reaches_the_throttle_through_x_forwarded_for(nginx):
    # Two clients on different loopback addresses; the first forges X-Forwarded-For every time.
    def login(source, i):
        return request("127.0.0.1", nginx.port, "POST", "/api/auth/token", source=source,
                       body=json.dumps({"email": f"nobody{i}@example.com", "password": "wrong-pass-1"}),
                       headers={"Content-Type": "application/json", "X-Forwarded-For": f"198.51.100.{i}"})[0]

    assert [login("127.0.0.2", i) for i in range(5)] == [401, 401, 401, 429, 429]  # THROTTLE_AUTH=3/min
    assert login("127.0.0.3", 99) == 401  # another client behind the same proxy: its own bucket


def test_a_client_cannot_choose_its_request_id_through_nginx(nginx):
    chosen = "00000000-0000-0000-0000-000000000000"
    status, headers, _ = request("127.0.0.1", nginx.port, "GET", "/api/health/live", headers={"X-Request-ID": chosen})
    assert status == 200
    assert headers["X-Request-ID"] != chosen and re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
