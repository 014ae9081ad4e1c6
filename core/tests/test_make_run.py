"""`make run`'s server step (config/serve.py): "Ready. Try: curl ..." only once this gunicorn
answers, a clear refusal when the port is taken, and Ctrl-C or SIGTERM stopping it; and its
jobs step (config/with_jobs.sh): a worker and the scheduler beside it, stopped with it."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.support.harness import free_port, until

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


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("stop", ["ctrl-c", "server-exits"])
def test_with_jobs_runs_a_worker_and_the_scheduler_and_stops_them_with_the_server(tmp_path, redis_server, stop):
    """config/with_jobs.sh, as `make run` uses it: beside the command (gunicorn there, a stand-in
    here) a worker runs what the scheduler sends (the job sweep, every second here). When the
    command ends, by Ctrl-C or by itself, both stop with it: nothing of the process group is left."""
    env = {**serve_env(tmp_path, redis_server.url), "CELERY_BROKER_URL": redis_server.url,
           "CELERY_TASK_ALWAYS_EAGER": "false", "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "beat"),
           "JOB_LOG_LEVEL": "info", "JOBS_SWEEP_EVERY": "1", "PYTHONUNBUFFERED": "1"}
    stop_file = tmp_path / "stop"
    server = f"import os, time\nwhile not os.path.exists({str(stop_file)!r}): time.sleep(0.1)"
    runner = subprocess.Popen(["config/with_jobs.sh", sys.executable, "-c", server], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(runner.stdout), daemon=True)
    reader.start()
    try:
        until(lambda: any("generation.tasks.sweep[" in line and "succeeded" in line for line in lines),
              timeout=90, what="a sweep sent by the scheduler and run by the worker")
        if stop == "ctrl-c":
            os.killpg(runner.pid, signal.SIGINT)  # in make run's terminal
        else:
            stop_file.touch()  # gunicorn ended on its own
        runner.wait(timeout=40)
        until(lambda: group_gone(runner.pid), timeout=30, what="the worker and the scheduler to stop")
    finally:
        if not group_gone(runner.pid):
            os.killpg(runner.pid, signal.SIGKILL)
        if runner.poll() is None:
            runner.wait()
        reader.join(5)
        runner.stdout.close()
