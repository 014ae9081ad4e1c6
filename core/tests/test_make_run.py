"""`make run`'s server step (config/serve.py): "Ready. Try: curl ..." only once this gunicorn
answers, a clear refusal when the port is taken, and Ctrl-C or SIGTERM stopping it; and its
jobs step (config/with_jobs.sh): a worker and the scheduler beside it, stopped with it."""

import errno
import os
import queue
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


class Served:
    """config/serve.py running in a session of its own, its output read line by line by a thread (a
    read never blocks past its timeout); stop() ends the whole session whatever happened."""

    def __init__(self, port: int, env: dict) -> None:
        self.process = subprocess.Popen([sys.executable, "config/serve.py", "--bind", f"127.0.0.1:{port}"], cwd=ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float = 60) -> str | None:
        return self.lines.get(timeout=timeout)

    def read_until(self, marker: str, timeout: float = 60) -> list[str]:
        lines, deadline = [], time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.next_line(left)
            except queue.Empty:
                break
            if line is None:
                break
            lines.append(line)
            if marker in line:
                return lines
        raise AssertionError(f"no {marker!r} in: {lines}")

    def rest(self) -> str:
        """What it printed after the last line read, once it has exited."""
        self.reader.join(timeout=10)
        return "\n".join(line for line in iter(self.lines.get_nowait, None))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.reader.join(timeout=10)
        self.process.stdout.close()


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
    server = Served(port, serve_env(tmp_path, redis_server.url))
    try:
        lines = server.read_until("Ready. Try:")
        # gunicorn bound first; at the moment the line appears, the server answers.
        assert any(f"Listening at: http://127.0.0.1:{port}" in line for line in lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=5) as response:
            assert response.status == 200
        curl = server.next_line().strip()
        assert curl.startswith(f"curl -s http://127.0.0.1:{port}/api/characters -H ")
        assert f"http://127.0.0.1:{port}/api/auth/token" in curl
        # Ctrl-C reaches the whole foreground process group; a supervisor sends SIGTERM to us.
        if stop_with == signal.SIGINT:
            os.killpg(server.process.pid, signal.SIGINT)
        else:
            server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=40) in (0, -signal.SIGINT)
        assert "Redis does not answer" not in server.rest()  # Redis answers: no warning
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=2)
    finally:
        server.stop()


def test_the_address_stays_taken_from_the_check_until_gunicorn_serves_it(tmp_path, redis_server):
    """gunicorn checks the settings for seconds before it serves: another program must not slip into
    the port meanwhile, or "Ready" would point at it."""
    port = free_port()
    server = Served(port, serve_env(tmp_path, redis_server.url))
    try:
        server.read_until("Starting gunicorn")  # its settings checks come next, then it serves
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        server.read_until("Ready. Try:")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=5) as response:
            assert response.status == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=40) == 0
    finally:
        server.stop()


def test_without_redis_it_says_the_jobs_wait(tmp_path):
    port = free_port()
    server = Served(port, serve_env(tmp_path, f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    try:
        server.read_until("Ready. Try:")
        warning = server.read_until("  or set REDIS_URL", timeout=30)
        assert any(line.startswith("make run: Redis does not answer") for line in warning)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=5) as response:
            assert response.status == 200  # it serves all the same
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=40) == 0
    finally:
        server.stop()


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
