"""`make run`'s server step (config/serve.py): "Ready. Try: curl ..." only once this gunicorn
answers, a clear refusal when the port is taken, and Ctrl-C or SIGTERM stopping it."""

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.support.harness import free_port

ROOT = Path(settings.BASE_DIR)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def serve_env(tmp_path: Path, redis_url: str) -> dict:
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "PROMETHEUS_"))}
    return {**env, "DJANGO_SETTINGS_MODULE": "config.settings.test", "REDIS_URL": redis_url,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"), "GUNICORN_WORKERS": "1",
            "GUNICORN_CONTROL_SOCKET": str(tmp_path / "gunicorn.ctl")}


def start(port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "config/serve.py", "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def read_until(server: subprocess.Popen, marker: str, timeout: float = 60) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(marker):
            return lines
    raise AssertionError(f"no {marker!r} in: {lines}")


def test_a_taken_port_is_refused_clearly_and_nothing_is_announced(tmp_path, redis_server):
    with socket.socket() as other:  # another program on the port, answering nothing like us
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run([sys.executable, "config/serve.py", "--bind", f"127.0.0.1:{port}"], cwd=ROOT,
                                env=serve_env(tmp_path, redis_server.url), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already taken" in result.stderr and "make run BIND=" in result.stderr
    assert "Ready" not in result.stdout + result.stderr


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_ready_only_once_this_server_answers_then_it_stops(tmp_path, redis_server, stop_with):
    port = free_port()
    server = start(port, serve_env(tmp_path, redis_server.url))
    try:
        lines = read_until(server, "Ready. Try:")
        # gunicorn bound first; at the moment the line appears, the server answers.
        assert any(f"Listening at: http://127.0.0.1:{port}" in line for line in lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=5) as response:
            assert response.status == 200
        curl = server.stdout.readline().strip()
        assert curl.startswith(f"curl -s http://127.0.0.1:{port}/api/characters -H ")
        assert f"http://127.0.0.1:{port}/api/auth/token" in curl
        # Ctrl-C reaches the whole foreground process group; a supervisor sends SIGTERM to us.
        if stop_with == signal.SIGINT:
            os.killpg(server.pid, signal.SIGINT)
        else:
            server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=40) in (0, -signal.SIGINT)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=2)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()


def test_the_address_stays_taken_from_the_check_until_gunicorn_serves_it(tmp_path, redis_server):
    """gunicorn checks the settings for seconds before it serves: another program must not slip into
    the port meanwhile, or "Ready" would point at it."""
    port = free_port()
    server = start(port, serve_env(tmp_path, redis_server.url))
    try:
        started = []
        while not any("Starting gunicorn" in line for line in started):
            line = server.stdout.readline()
            assert line, started
            started.append(line)
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        read_until(server, "Ready. Try:")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=5) as response:
            assert response.status == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=40) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()


def test_check_alone_answers_whether_the_port_is_free(tmp_path, redis_server):
    env = serve_env(tmp_path, redis_server.url)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        taken = subprocess.run([sys.executable, "config/serve.py", "--check", "--bind", f"127.0.0.1:{port}"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    free = subprocess.run([sys.executable, "config/serve.py", "--check", "--bind", f"127.0.0.1:{free_port()}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert (taken.returncode, free.returncode) == (1, 0)
    assert "already taken" in taken.stderr and free.stdout == free.stderr == ""
