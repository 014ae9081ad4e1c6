"""Metrics across processes: gunicorn workers that come and go, operator commands that must not
count as app traffic, and gunicorn's own settings (.env, metrics directory, control socket)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import free_port

ROOT = Path(settings.BASE_DIR)
CONF = ROOT / "config" / "gunicorn.conf.py"


def run_python(code: str, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True, capture_output=True, text=True)


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GUNICORN_", "PROMETHEUS_", "METRICS_WORKERS"))}
    return {**env, **extra}


def gauge_max(path: Path, name: str) -> float | None:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    values = [s.value for m in registry.collect() for s in m.samples if s.name == name]
    return max(values) if values else None


def test_a_dead_workers_open_breaker_stops_counting(tmp_path):
    """A worker that died with its breaker open must not keep cache_breaker_open at 1."""
    env = clean_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    dead = run_python("import os\nfrom core import metrics\nmetrics.breaker_open.labels(node='').set(1)\nprint(os.getpid())", env)
    run_python("from core import metrics\nmetrics.breaker_open.labels(node='').set(0)", env)  # a live worker, healthy
    assert gauge_max(tmp_path, "cache_breaker_open") == 1
    # gunicorn's child_exit hook, for the worker that is gone.
    run_python("import runpy\n"
               f"hooks = runpy.run_path({str(CONF)!r})\n"
               f"hooks['child_exit'](None, type('Worker', (), {{'pid': {int(dead.stdout)}}})())", env)
    assert gauge_max(tmp_path, "cache_breaker_open") == 0


def test_gunicorn_reads_its_settings_from_dot_env_and_keeps_state_under_var(tmp_path):
    """GUNICORN_* in .env are honoured (the real environment still wins), the metrics directory
    defaults to var/prometheus, and the control socket lives under var/, not in the home directory."""
    (tmp_path / "config").mkdir()
    shutil.copy(CONF, tmp_path / "config" / "gunicorn.conf.py")
    (tmp_path / ".env").write_text("GUNICORN_WORKERS=5\nGUNICORN_ACCESSLOG=-\nGUNICORN_BIND=127.0.0.1:8123\n"
                                   "GUNICORN_TIMEOUT=45\n")
    code = ("import json, os, runpy\n"
            "c = runpy.run_path('config/gunicorn.conf.py')\n"
            "print(json.dumps({k: c[k] for k in ('bind', 'workers', 'accesslog', 'timeout', 'graceful_timeout',"
            " 'control_socket')} | {'metrics': os.environ['PROMETHEUS_MULTIPROC_DIR']}))")
    got = json.loads(run_python(code, clean_env(GUNICORN_TIMEOUT="40"), cwd=tmp_path).stdout)
    assert got["bind"] == "127.0.0.1:8123" and got["workers"] == 5 and got["accesslog"] == "-"
    assert got["timeout"] == 40  # the environment wins over .env
    assert got["graceful_timeout"] == 30
    assert got["control_socket"] == str(tmp_path / "var" / "gunicorn.ctl")
    assert got["metrics"] == str(tmp_path / "var" / "prometheus")


@pytest.mark.django_db(transaction=True)
def test_operator_commands_write_no_metrics_files_but_read_the_workers(tmp_path, redis_server, characters):
    """With PROMETHEUS_MULTIPROC_DIR set for every process (Docker), a manage.py run leaves no file
    behind and its own cache reads (cache_warm's misses) are not counted as app traffic, while
    cache_stats still sums what the workers counted."""
    db = connection.settings_dict
    env = clean_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings.test",
                    DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
                    REDIS_URL=redis_server.url)
    run_python("from core import metrics\nmetrics.FamilyCounters('character').hit.inc(7)", env)  # a worker
    worker_files = sorted(tmp_path.iterdir())

    subprocess.run([sys.executable, "manage.py", "cache_warm"], env=env, cwd=ROOT, check=True, capture_output=True)
    assert sorted(tmp_path.iterdir()) == worker_files
    out = subprocess.run([sys.executable, "manage.py", "cache_stats", "--json"], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    app = json.loads(out)["app"]
    assert app["multiprocess"] is True
    assert app["families"]["character"]["hit"] == 7
    assert app["families"]["character"]["miss"] == 0  # cache_warm's misses were its own
    assert sorted(tmp_path.iterdir()) == worker_files


def scrape_count(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(s.value for m in text_string_to_metric_families(body) for s in m.samples  # every route
               if s.name == "http_request_duration_seconds_count" and s.labels["method"] == "GET"
               and s.labels["status"] == "2xx")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gunicorn_with_two_workers_reports_one_consistent_count(tmp_path, redis_server):
    """Successive scrapes of one counter land on either worker: each must see the sum."""
    port = free_port()
    db = connection.settings_dict
    env = clean_env(DJANGO_SETTINGS_MODULE="config.settings.test", GUNICORN_BIND=f"127.0.0.1:{port}",
                    GUNICORN_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
                    GUNICORN_CONTROL_SOCKET=str(tmp_path / "gunicorn.ctl"),
                    DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
                    REDIS_URL=redis_server.url)
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "counter_999999.db").write_bytes(b"stale")  # a previous run's file
    server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application",
                               "-c", str(CONF)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
                time.sleep(0.1)
        for _ in range(20):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=10).read()
        counts = [scrape_count(port) for _ in range(8)]
        # Every scrape counts itself after answering: one more per scrape, whichever worker answers
        # (the start-up probes may add a request the client gave up on).
        assert counts[0] >= 21
        assert counts == [counts[0] + i for i in range(8)], counts
        assert (tmp_path / "gunicorn.ctl").exists()
        # The compose file's web healthcheck, against this gunicorn.
        from core.tests.test_docker import web_healthcheck

        assert subprocess.run(web_healthcheck(port), capture_output=True).returncode == 0
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_forked_worker_counts_in_its_own_file(tmp_path):
    """Multiprocess mode keeps the process id instead of asking for it per increment; a worker
    forked after import (gunicorn's preload) must still write to a file of its own."""
    script = textwrap.dedent("""
        import os, sys
        sys.path.insert(0, os.getcwd())
        from core import metrics
        counter = metrics.cache_requests.labels(family="t", result="hit")
        counter.inc()
        child = os.fork()
        if child == 0:
            counter.inc(); counter.inc()
            os._exit(0)
        os.waitpid(child, 0)
        print(os.getpid(), child)
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                         cwd=settings.BASE_DIR)
    parent, child = out.stdout.split()
    counters = {p.name for p in tmp_path.iterdir() if p.name.startswith("counter_")}  # gauges have files too
    assert counters == {f"counter_{parent}.db", f"counter_{child}.db"}
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("cache_requests_total", {"family": "t", "result": "hit"}) == 3
