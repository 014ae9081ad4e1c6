"""The job engine under load, on its own: `python bench/jobs.py` (not part of `make bench`).

A database of its own, a private redis-server, gunicorn (2 sync workers, the bench settings), one
Celery worker (threads) and the local OpenAI-compatible server (tests/support/openai_server.py) as a
process, answering each image after --image-delay seconds (5). Then:

1. cached reads (wrk on GET /api/characters) alone, and while --rate generations a second are
   posted (10: with 5 s per image about 50 are in flight), alternated --rounds times: req/s and p99;
2. accepted -> completed with idle workers (one a second), and of the generations posted meanwhile
   (the bench process watches their rows);
3. --kill-jobs generations (100), the worker killed with -9 (its whole process group) while they
   run, a new worker started: every generation must end completed, or failed and refunded, each
   charged once and refunded at most once, every balance equal to its ledger.

Results go to bench/results/jobs.json. Needs PostgreSQL on 127.0.0.1:5432, redis-server and wrk.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, data  # noqa: E402

PROMPT = '{"prompt": "a lighthouse at dusk, number %d"}'


def wrk(url: str, token: str, seconds: int) -> dict:
    out = subprocess.run(["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {token}",
                          url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "non_2xx": int(errors.group(1)) if errors else 0}


class Poster(threading.Thread):
    """Posts generations at ``rate`` a second, round robin over the tokens; records (id, accepted at)."""

    def __init__(self, port: int, tokens: list[str], rate: float, count: int | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.tokens, self.rate, self.count = port, tokens, rate, count
        self.accepted: list[tuple[int, float]] = []
        self.refused: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        start, n = time.monotonic(), 0
        while not self.stopping.is_set() and (self.count is None or n < self.count):
            due = start + n / self.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            token = self.tokens[n % len(self.tokens)]
            connection.request("POST", "/api/generations", PROMPT % n,
                               {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
            if response.status == 202:
                self.accepted.append((json.loads(body)["id"], time.time()))
            else:
                self.refused.append(response.status)
            n += 1
        connection.close()


class Watcher(threading.Thread):
    """Notes when each generation is first seen finished: a query every ``every`` seconds on its own
    connection (the bench's own load on the database under test, so not more often than the
    resolution the latency target needs)."""

    def __init__(self, dsn: str, poster: Poster, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.dsn, self.poster, self.every = dsn, poster, every
        self.finished: dict[int, tuple[str, float]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            while not self.stopping.is_set():
                waiting = [gen_id for gen_id, _ in list(self.poster.accepted) if gen_id not in self.finished]
                if waiting:
                    rows = connection.execute(
                        "SELECT id, status FROM generation_generation WHERE id = ANY(%s)"
                        " AND status IN ('completed', 'failed')", [waiting]).fetchall()
                    now = time.time()
                    for gen_id, status in rows:
                        self.finished[gen_id] = (status, now)
                time.sleep(self.every)

    def latencies(self) -> list[float]:
        accepted = dict(self.poster.accepted)
        return sorted(at - accepted[gen_id] for gen_id, (status, at) in self.finished.items() if status == "completed")


class CpuMeter:
    """CPU seconds each party used between two snapshots: where the cores went while reads ran."""

    def __init__(self, parties: dict[str, callable]) -> None:
        self.parties = parties  # name -> () -> CPU seconds so far

    def snapshot(self) -> dict[str, float]:
        return {name: read() for name, read in self.parties.items()}

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: round(after[name] - before[name], 3) for name in before}


def database_backends_cpu(dsn: str, database: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends now connected to ``database``."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as connection:
        pids = [pid for (pid,) in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [database])]
    return sum(common.process_tree_cpu(pid) for pid in pids)


def cost_per_generation(round_: dict, rate: float, seconds: int) -> dict:
    """Derived from a round's CPU meter, not measured apart: the CPU one generation costs each
    party, and the share of reads a web host would keep if the job's other parties (worker,
    database, Redis, provider) ran on hosts of their own. A POST's gunicorn CPU is gunicorn's CPU
    with generations, less its reads at the CPU per read measured alone."""
    alone, busy = round_["alone"], round_["with_generations"]
    posted = rate * seconds
    per_read = alone["cpu_s"]["gunicorn"] / (alone["rps"] * seconds)
    per_post = (busy["cpu_s"]["gunicorn"] - busy["rps"] * seconds * per_read) / posted
    others = {name: round((busy["cpu_s"][name] - alone["cpu_s"][name]) / posted * 1000, 2)
              for name in ("job_worker", "postgres", "redis", "provider")}
    return {"read_cpu_ms": round(per_read * 1000, 3), "post_cpu_ms": round(per_post * 1000, 2), **{
        f"{name}_cpu_ms": value for name, value in others.items()},
        "reads_kept_with_jobs_elsewhere": round(1 - per_post * posted / alone["cpu_s"]["gunicorn"], 3)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def make_users(count: int) -> list[str]:
    """``count`` users on the free plan (5 generations a day, 30 coins), and their tokens."""
    from django.test.utils import override_settings

    from accounts.apis import tokens_for
    from accounts.services import user_register

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        users = [user_register(email=f"jobs{i}@bench.invalid", password="bench-password-123") for i in range(count)]
    return [tokens_for(user)["access"] for user in users]


def ledger_check(dsn: str, ids: list[int]) -> dict:
    """Per generation: spends and refunds in the ledger; per user: balance against the ledger."""
    import psycopg

    with psycopg.connect(dsn) as connection:
        gens = connection.execute("SELECT id, user_id, status, cost FROM generation_generation WHERE id = ANY(%s)",
                                  [ids]).fetchall()
        moves = connection.execute(
            "SELECT reference, reason, count(*) FROM accounts_coinledgerentry WHERE reference = ANY(%s)"
            " GROUP BY reference, reason", [[f"generation:{i}" for i in ids]]).fetchall()
        drift = connection.execute(
            "SELECT count(*) FROM accounts_user u WHERE u.coin_balance <> (SELECT coalesce(sum(amount), 0)"
            " FROM accounts_coinledgerentry e WHERE e.user_id = u.id)").fetchone()[0]
    counted = {(ref, reason): n for ref, reason, n in moves}
    report = {"completed": 0, "failed": 0, "unfinished": 0, "coins_lost": 0, "charged_twice": 0,
              "refunded_twice": 0, "completed_and_refunded": 0, "balances_off_ledger": drift}
    for gen_id, _user_id, status, cost in gens:
        spends = counted.get((f"generation:{gen_id}", "spend"), 0)
        refunds = counted.get((f"generation:{gen_id}", "refund"), 0)
        report[status if status in ("completed", "failed") else "unfinished"] += 1
        report["charged_twice"] += spends > 1
        report["refunded_twice"] += refunds > 1
        report["completed_and_refunded"] += status == "completed" and refunds > 0
        if status == "failed" and refunds == 0:
            report["coins_lost"] += cost
    return report


def outcomes_awaited(watcher, poster, image_delay: float) -> list[float]:
    """Wait (bounded) until every generation the poster got accepted has finished; stop the
    watcher and return its accepted -> completed latencies."""
    deadline = time.monotonic() + image_delay * 4 + 30
    while len(watcher.finished) < len(poster.accepted) and time.monotonic() < deadline:
        time.sleep(0.2)
    watcher.stopping.set()
    watcher.join()
    return watcher.latencies()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-delay", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=10.0, help="generations posted per second")
    parser.add_argument("--seconds", type=int, default=15, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100, help="the worker's threads")
    parser.add_argument("--kill-jobs", type=int, default=100)
    parser.add_argument("--database", default=f"bench_jobs_{os.getpid()}")
    args = parser.parse_args()

    from tests.support.celery_worker import CeleryWorker
    from tests.support.harness import RedisServer

    data.recreate_database(args.database)
    dsn = data.database_url(args.database)
    redis = RedisServer().start()
    common.setup_django(dsn, redis.url, mode="ours")
    common.migrate()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    provider = subprocess.Popen([sys.executable, "-m", "tests.support.openai_server", "--image-delay", str(args.image_delay)],
                                cwd=common.ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    base_url = provider.stdout.readline().strip()
    app = worker = None
    try:
        needed = int(args.rate * (args.seconds + 8) * args.rounds + args.kill_jobs) // 5 + 20
        tokens = make_users(needed)
        # No bench-only SQL counting in the server: this bench reports no SQL counts.
        app = common.App(mode="ours", database_url=dsn, redis_url=redis.url, workers=2, log=log_dir / "gunicorn.log",
                         extra_env={"BENCH_COUNT_SQL": "0"})
        app.wait_ready(tokens[0])
        app.manage("load_demo_data")
        worker_env = {"GENERATION_BACKEND": "generation.backends.OpenAIImageBackend", "OPENAI_BASE_URL": base_url,
                      "OPENAI_API_KEY": "sk-local-test", "JOB_VISIBILITY_TIMEOUT": "10", "JOB_RESTORE_EVERY": "1",
                      "LOG_LEVEL": "INFO"}

        def start_worker() -> CeleryWorker:
            return CeleryWorker(redis_url=redis.url, env=worker_env, pool="threads", concurrency=args.concurrency,
                                settings_module="config.settings.bench").start()

        worker = start_worker()
        used = 0
        # Accepted -> completed with idle workers: one generation a second, nothing else running.
        idle_count = 10
        poster = Poster(app.port, tokens[:idle_count], 1.0, count=idle_count)
        used += idle_count
        watcher = Watcher(dsn, poster)
        poster.start()
        watcher.start()
        poster.join()
        idle_latencies = outcomes_awaited(watcher, poster, args.image_delay)
        idle = {"posted": len(poster.accepted), "completed": len(idle_latencies),
                "accepted_to_completed_p50_s": percentile(idle_latencies, 0.5),
                "accepted_to_completed_max_s": idle_latencies[-1] if idle_latencies else None}
        print(f"idle workers: {json.dumps(idle)}", flush=True)
        meter = CpuMeter({
            "gunicorn": lambda: common.process_tree_cpu(app.process.pid),
            "job_worker": lambda: common.process_tree_cpu(worker.process.pid),
            "provider": lambda: common.process_tree_cpu(provider.pid),
            "redis": lambda: common.process_tree_cpu(redis.process.pid),
            "postgres": lambda: database_backends_cpu(dsn, args.database),
            "bench_and_wrk": lambda: sum(os.times()[:4]),
        })
        reader = tokens[-1]  # never generates
        url = app.base + "/api/characters"
        wrk(url, reader, 3)  # warm
        rounds = []
        for round_ in range(args.rounds):
            before = meter.snapshot()
            alone = wrk(url, reader, args.seconds)
            alone["cpu_s"] = meter.used(before, meter.snapshot())
            per_round = int(args.rate * (args.seconds + 8)) // 5 + 1
            poster = Poster(app.port, tokens[used:used + per_round], args.rate)
            used += per_round
            watcher = Watcher(dsn, poster)
            poster.start()
            watcher.start()
            time.sleep(args.image_delay + 1)  # steady state: about rate x delay in flight
            before = meter.snapshot()
            busy = wrk(url, reader, args.seconds)
            busy["cpu_s"] = meter.used(before, meter.snapshot())
            poster.stopping.set()
            poster.join()
            latencies = outcomes_awaited(watcher, poster, args.image_delay)
            rounds.append({"alone": alone, "with_generations": busy, "posted": len(poster.accepted),
                           "per_generation": cost_per_generation({"alone": alone, "with_generations": busy},
                                                                 args.rate, args.seconds),
                           "refused": len(poster.refused), "completed": len(latencies),
                           "accepted_to_completed_p50_s": percentile(latencies, 0.5),
                           "accepted_to_completed_p90_s": percentile(latencies, 0.9),
                           "accepted_to_completed_max_s": latencies[-1] if latencies else None})
            print(f"round {round_ + 1}: {json.dumps(rounds[-1])}", flush=True)

        # Kill -9 mid-job: post, kill the worker while jobs are on the provider, start another.
        poster = Poster(app.port, tokens[used:], args.rate, count=args.kill_jobs)
        watcher = Watcher(dsn, poster)
        poster.start()
        watcher.start()
        time.sleep(args.image_delay + 1)
        worker.kill()
        killed_at = time.time()
        worker = start_worker()
        poster.join()
        # What beat's sweep does (every JOBS_SWEEP_EVERY s in production), quicker: a message the
        # killed worker had popped from the queue but not yet recorded as taken is gone from the
        # broker; its pending row is the record, and the sweep sends it again.
        from django.test.utils import override_settings

        from generation.jobs import generations_requeue

        requeued = 0
        deadline = time.monotonic() + 180
        while len(watcher.finished) < len(poster.accepted) and time.monotonic() < deadline:
            time.sleep(0.5)
            if time.time() - killed_at > 15:
                with override_settings(GENERATION_REQUEUE_AFTER=15):
                    requeued += generations_requeue()
        watcher.stopping.set()
        watcher.join()
        kill = ledger_check(dsn, [gen_id for gen_id, _ in poster.accepted])
        kill.update({"posted": len(poster.accepted), "refused": len(poster.refused), "requeued_by_sweep": requeued,
                     "last_finished_after_kill_s": max((at for _, at in watcher.finished.values()), default=killed_at)
                     - killed_at})
        print(f"kill -9: {json.dumps(kill)}", flush=True)

        ratio = statistics.median([r["with_generations"]["rps"] / r["alone"]["rps"] for r in rounds] or [0])
        p99_ratio = statistics.median([r["with_generations"]["p99_ms"] / r["alone"]["p99_ms"] for r in rounds] or [0])
        p50s = [r["accepted_to_completed_p50_s"] for r in rounds if r["accepted_to_completed_p50_s"] is not None]
        result = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": common.machine(),
            "load_average": os.getloadavg(), "args": vars(args), "idle": idle, "rounds": rounds, "kill": kill,
            "summary": {"reads_rps_ratio_median": ratio, "reads_p99_ratio_median": p99_ratio,
                        "reads_kept_with_jobs_elsewhere_median (derived)": statistics.median(
                            [r["per_generation"]["reads_kept_with_jobs_elsewhere"] for r in rounds] or [0]),
                        "accepted_to_completed_p50_s_median": statistics.median(p50s) if p50s else None,
                        "accepted_to_completed_p50_s_idle": idle["accepted_to_completed_p50_s"]},
        }
        out = common.RESULTS / ("jobs.json" if rounds else "jobs-kill.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["summary"]), f"-> {out}", flush=True)
    finally:
        if worker is not None:
            worker.close()
        if app is not None:
            app.stop()
        os.killpg(provider.pid, signal.SIGTERM)
        redis.close()
        from django.db import connections

        connections.close_all()
        data.drop_database(args.database)


if __name__ == "__main__":
    main()
