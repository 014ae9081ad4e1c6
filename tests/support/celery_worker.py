"""A real Celery worker for tests and the bench: a ``celery worker`` process on the test's own
database and Redis, started and killed (-9 too) like any process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The database this process uses (the test database, once pytest-django set it up)."""
    db = settings.DATABASES["default"]
    user, host, port = db.get("USER") or "postgres", db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


class CeleryWorker:
    """``celery -A config worker`` with this process's settings module, database and Redis
    (``env`` adds or overrides environment variables, e.g. GENERATION_BACKEND)."""

    def __init__(self, *, redis_url: str, env: dict[str, str] | None = None, concurrency: int = 2,
                 pool: str = "prefork", queues: str = "generations,chat,default",
                 settings_module: str = "config.settings.test") -> None:
        self.redis_url = redis_url
        self.extra_env = env or {}
        self.concurrency = concurrency
        self.pool = pool
        self.queues = queues
        self.settings_module = settings_module
        self.process: subprocess.Popen | None = None
        self.log = Path(tempfile.mkstemp(prefix="celery-worker-", suffix=".log")[1])

    def start(self, timeout: float = 60.0) -> CeleryWorker:
        # Not gunicorn's metrics directory (the test's own process may have one), unless given.
        env = {
            **{name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"},
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "DATABASE_URL": database_url(),
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.redis_url,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        command = [str(Path(sys.executable).with_name("celery")), "-A", "config", "worker",
                   "--pool", self.pool, "--concurrency", str(self.concurrency), "-Q", self.queues,
                   "--loglevel", "info", "--without-heartbeat", "--without-gossip", "--without-mingle",
                   "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h"]
        with open(self.log, "ab") as out:
            # A session of its own: kill() reaches the pool's children too.
            self.process = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        output = self.log.read_text(errors="replace")[-3000:]
        self.close()
        raise RuntimeError(f"the Celery worker did not start:\n{output}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool's processes at once: nothing finishes, nothing acks."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None
