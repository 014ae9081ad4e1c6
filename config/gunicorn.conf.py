"""gunicorn settings, from the environment or the project's .env (as Django reads them).

The master reads this file before any worker imports the app, so what it puts into os.environ here
(the .env values, the metrics directory) every worker inherits.
"""

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
if (BASE_DIR / ".env").exists():
    env.read_env(BASE_DIR / ".env", overwrite=False)  # the real environment wins, as in Django's settings

bind = env("GUNICORN_BIND", default="127.0.0.1:8000")
workers = env.int("GUNICORN_WORKERS", default=2)
worker_class = "sync"
timeout = env.int("GUNICORN_TIMEOUT", default=30)
graceful_timeout = env.int("GUNICORN_GRACEFUL_TIMEOUT", default=30)
keepalive = 5
accesslog = env("GUNICORN_ACCESSLOG", default="") or None
# gunicorn's default access line plus the request ID the app returned (core.http.middleware).
access_log_format = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
                     "%({" + env("REQUEST_ID_HEADER", default="X-Request-ID").lower() + "}o)s")
errorlog = "-"
max_requests = env.int("GUNICORN_MAX_REQUESTS", default=0)
# gunicorn 27's control socket (gunicornc) defaults to one path per user home: a second instance on
# the host would take over the first one's. One per checkout instead.
control_socket = env("GUNICORN_CONTROL_SOCKET", default=str(VAR_DIR / "gunicorn.ctl"))

# Every worker writes its metrics here and /metrics sums them: without it each scrape would see the
# one worker that answered. Must be set before a worker imports prometheus_client.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = env("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))


def _reset_metrics_dir() -> None:
    """Files of a previous run would be summed in: start from an empty directory (only the metrics
    files go, in case the directory was pointed at a shared one). Files of processes still alive
    stay: the job workers `make run` starts beside gunicorn write there too."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        if not _alive(stale.stem.rpartition("_")[2]):
            stale.unlink(missing_ok=True)


def _alive(pid: str) -> bool:
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def on_starting(server):
    _reset_metrics_dir()
    _check_settings()


def _check_settings() -> None:
    """A bad setting (REDIS_URL or Sentinel: core.E010-E015; payments: payments.E001-E007) stops
    gunicorn here with the system check's message, rather than failing every request. The same
    checks as migrate and runserver run (every tag but the database's), whatever apps the settings
    install. In a child process, so the master imports no Django (nor prometheus_client)."""
    import subprocess
    import sys

    environment = {**os.environ}
    environment.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
    result = subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "check"],
                            cwd=BASE_DIR, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr.strip() or result.stdout.strip())


def on_exit(server):
    # No worker is left: cache_stats must not go on summing their counters.
    _reset_metrics_dir()


def child_exit(server, worker):
    # Drop the live gauges (cache_breaker_open) of a worker that is gone; its counters stay summed.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
