"""Pieces shared by bench/run.py and bench/chaos.py: Django setup against the bench database,
tokens, a gunicorn the script starts (and stops by its own PID), /metrics parsing, machine facts."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup_django(database_url: str, redis_url: str = "redis://127.0.0.1:1/0", mode: str = "none") -> None:
    """Configure this process with the bench settings (to migrate, load and mint tokens)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.bench"
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    os.environ["BENCH_CACHE_MODE"] = mode
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def mint_tokens(count: int) -> list[str]:
    """One access token per bench user 1..count, with the email claim authentication reads."""
    from accounts.apis import EmailTokenObtainPairSerializer
    from accounts.models import User
    from bench.data import user_email

    return [
        str(EmailTokenObtainPairSerializer.get_token(User(id=i, email=user_email(i), is_active=True)).access_token)
        for i in range(1, count + 1)
    ]


def gunicorn_available() -> Path:
    path = VENV_BIN / "gunicorn"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `make install` first")
    return path


class App:
    """gunicorn (sync workers) with the bench settings, on a free port."""

    def __init__(self, *, mode: str, database_url: str, redis_url: str, workers: int, log: Path,
                 extra_env: dict | None = None) -> None:
        from tests.support.harness import free_port

        self.port = free_port()
        self.mode = mode
        self.metrics_dir = tempfile.mkdtemp(prefix="bench-prom-")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.bench",
            "BENCH_CACHE_MODE": mode,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            # Its own control socket: never take over the one of a `make run` in this checkout.
            "GUNICORN_CONTROL_SOCKET": os.path.join(self.metrics_dir, "gunicorn.ctl"),
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_ACCESSLOG": "",
            **(extra_env or {}),
        }
        self.env = env
        self.log = open(log, "ab")
        self.process = subprocess.Popen(
            [str(gunicorn_available()), "config.wsgi:application", "-c", str(ROOT / "config" / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{self.port}"],
            cwd=ROOT, env=env, stdout=self.log, stderr=self.log,
        )

    def manage(self, *args: str) -> str:
        """A manage.py command against this app's database and Redis (its metrics not counted)."""
        env = {k: v for k, v in self.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        out = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
        if out.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {out.stdout}\n{out.stderr}")
        return out.stdout

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, token: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log.name}")
            try:
                request = urllib.request.Request(self.base + "/api/bench/floor",
                                                 headers={"Authorization": f"Bearer {token}"})
                if urllib.request.urlopen(request, timeout=5).status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer within {timeout} s; see {self.log.name}")

    def metrics(self) -> dict[tuple, float]:
        return parse_metrics(urllib.request.urlopen(self.base + "/metrics", timeout=10).read().decode())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


_SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple, float]:
    """Prometheus text into {(name, (("label", "value"), ...)): value}."""
    out = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            out[(name, tuple(sorted(_LABEL.findall(labels or ""))))] = float(value)
    return out


def metric_sum(metrics: dict, name: str, **where: str) -> float:
    total = 0.0
    for (metric, labels), value in metrics.items():
        if metric == name and all((k, v) in labels for k, v in where.items()):
            total += value
    return total


def metric_by(metrics: dict, name: str, label: str, **where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (metric, labels), value in metrics.items():
        if metric == name and all((k, v) in labels for k, v in where.items()):
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
    return out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": next((w.split("=")[1] for w in redis_version if w.startswith("v=")), "?"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def postgres_version(database_url: str) -> str:
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def process_tree_cpu(root_pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and every live descendant (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(used.get(pid, 0.0) for pid in tree)
