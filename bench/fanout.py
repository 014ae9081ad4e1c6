"""Fan-out invalidation: a plan edit with many subscribers, per key (before) and by version key (now),
side by side; then what the version key costs a cached read, in-process beside the bare floor.

1. **The edit.** A database of its own with ``--subscribers`` users (100,000) on one plan, a
   redis-server of its own holding both cached keys of every subscriber. Each round edits the plan
   twice, once per mode, the order alternating: ``per-key`` is the receiver as it was (the
   subscribers' ids read inside the transaction, two keys each deleted after commit), ``version``
   the one in place now (one version key deleted after commit). Per edit: wall time from the
   transaction's start to the end of the after-commit deletes, the part inside the transaction,
   Redis commands (INFO commandstats on that server), SQL statements; and, in one more edit per
   mode under ``tracemalloc`` (slower, so not timed), the peak of Python memory.
2. **The read.** bench/inproc.py's WSGI loop in three processes: the bare floor (bench/bare.py), the
   app as it is (``GET /api/subscription`` reads the plans' version in its MGET), and the same app
   with the version keys taken off its families (the read as it was: the same stamped values,
   no version key in the MGET). Batches alternate bare / one app / bare / the other, the order
   rotating; CPU per request (``time.process_time``) and its ratio to the bare batch beside it.

    python bench/fanout.py [--subscribers 100000] [--rounds 3] [--read-rounds 7] [--quick]

Results go to bench/results/fanout.json. The machine is shared: read the spread, not one figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, data  # noqa: E402

_NOT_THE_EDIT = {"info", "config|resetstat", "client|setinfo", "hello", "ping", "select", "client|setname"}


def redis_commands(client) -> int:
    stats = client.info("commandstats")
    return sum(e["calls"] for name, e in stats.items() if name.removeprefix("cmdstat_") not in _NOT_THE_EDIT)


def make_subscribers(plan, count: int) -> list[int]:
    from datetime import timedelta

    from django.utils import timezone

    from accounts.models import User
    from subscriptions.models import Subscription

    ids: list[int] = []
    now = timezone.now()
    for start in range(0, count, 5000):
        users = User.objects.bulk_create([User(email=f"fan{n}@bench.example", password="!")
                                          for n in range(start, min(count, start + 5000))])
        Subscription.objects.bulk_create([Subscription(user=u, plan=plan, current_period_start=now,
                                                       current_period_end=now + timedelta(days=30))
                                          for u in users])
        ids += [u.id for u in users]
    return ids


def fill(client, user_ids: list[int]) -> None:
    """Both keys of every subscriber, a value of the size the loader gives (~400 B), as warm-up leaves them."""
    from core.cache.api import Payload
    from subscriptions.cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER, subscription_payload

    value = Payload.of(subscription_payload(user_id=user_ids[0]), stamp=b"0" * 16).pack()
    pipe = client.pipeline(transaction=False)
    for at, user_id in enumerate(user_ids):
        for family in (SUBSCRIPTION_USER, SUBSCRIPTION_STATS):
            pipe.set(family.key(user_id=user_id), value, ex=600)
        if at % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def use_mode(mode: str) -> None:
    """Connect the plan receiver of ``mode``: ``per-key`` (as it was) or ``version`` (now)."""
    from django.db.models.signals import post_save

    from subscriptions import cache
    from subscriptions.models import Plan

    def per_key(*, instance, **kwargs):
        cache.invalidate_subscriptions(user_ids=instance.subscriptions.values_list("user_id", flat=True).iterator())

    uid = "subscriptions.cache.flush_plan_subscribers:post_save:subscriptions.Plan"
    post_save.disconnect(sender=Plan, dispatch_uid=uid)
    post_save.connect(per_key if mode == "per-key" else cache.flush_plan_subscribers, sender=Plan, weak=False,
                      dispatch_uid=uid)


def edit(plan, client, n: int, *, traced: bool = False) -> dict:
    from django.db import connection, transaction

    statements = []

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    client.config_resetstat()
    marks: dict[str, float] = {}
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    with connection.execute_wrapper(count), transaction.atomic():
        # Registered first, so it runs first after commit: the end of the part inside the transaction.
        transaction.on_commit(lambda: marks.setdefault("commit", time.perf_counter()))
        plan.name = f"Plus {n}"
        plan.save()
    ended = time.perf_counter()
    result = {"seconds": round(ended - started, 4), "in_transaction": round(marks["commit"] - started, 4),
              "redis_commands": redis_commands(client), "sql": len(statements)}
    if traced:
        result["peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 1e6, 1)
        tracemalloc.stop()
    return result


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def edit_bench(args, redis) -> dict:
    from subscriptions.models import Plan

    plan = Plan.objects.get(code="plus")
    t0 = time.perf_counter()
    ids = make_subscribers(plan, 1 if args.skip_edit else args.subscribers)
    if args.skip_edit:
        return {}
    print(f"{len(ids)} subscribers in {time.perf_counter() - t0:.0f} s", flush=True)
    client = redis.client()
    runs: dict[str, list[dict]] = {"per-key": [], "version": []}
    for r in range(args.rounds):
        for mode in (("per-key", "version") if r % 2 == 0 else ("version", "per-key")):
            use_mode(mode)
            fill(client, ids)
            runs[mode].append(edit(plan, client, r))
            print(f"round {r + 1} {mode}: {runs[mode][-1]}", flush=True)
    peaks = {}
    for mode in runs:
        use_mode(mode)
        fill(client, ids)
        peaks[mode] = edit(plan, client, 99, traced=True)["peak_mb"]
    use_mode("version")
    summary = {mode: {"seconds": spread([x["seconds"] for x in rs]),
                      "in_transaction": spread([x["in_transaction"] for x in rs]),
                      "redis_commands": sorted({x["redis_commands"] for x in rs}),
                      "sql": sorted({x["sql"] for x in rs}), "python_peak_mb": peaks[mode]}
               for mode, rs in runs.items()}
    return {"subscribers": len(ids), "runs": runs, "summary": summary}


# --- the read ------------------------------------------------------------------------------------


def read_bench(args, redis, url: str) -> dict:
    from accounts.apis import EmailTokenObtainPairSerializer
    from accounts.models import User
    from bench.run import InprocServer
    from core.cache.api import fetch
    from subscriptions.cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER

    user = User.objects.order_by("id").first()
    fetch(SUBSCRIPTION_USER, user_id=user.id)  # stamped values both apps read
    fetch(SUBSCRIPTION_STATS, user_id=user.id)
    token = str(EmailTokenObtainPairSerializer.get_token(user).access_token)
    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    (work / "tokens.txt").write_text(token + "\n")
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR")}
    app = {**base, "DJANGO_SETTINGS_MODULE": "config.settings.bench", "BENCH_CACHE_MODE": "ours",
           "BENCH_COUNT_SQL": "0", "DATABASE_URL": url, "REDIS_URL": redis.url}
    envs = {"bare": {**base, "DJANGO_SETTINGS_MODULE": "bench.bare"},
            "version": app, "no-version": {**app, "BENCH_FANOUT_NO_VERSION": "1"}}
    log = open(common.RESULTS / "fanout-inproc.log", "a")
    servers = {}
    paths = {"subscription": "/api/subscription", "stats": "/api/subscription/stats"}
    per_batch = 50 if args.quick else 300
    try:
        for name, env in envs.items():
            servers[name] = InprocServer(env, work / "tokens.txt", log)
        floor = [["GET", "/api/bench/floor", None, 0]]
        servers["bare"].run(floor, 20)
        for name in ("version", "no-version"):
            for path in paths.values():
                servers[name].run([["GET", path, None, 0]], 20)
        # Python function calls per request: a figure the machine's noise cannot move.
        calls = {name: {p: servers[name].ask({"op": "calls", "requests": [["GET", path, None, 0]]})["calls"]
                        for p, path in paths.items()} for name in ("version", "no-version")}
        print(f"function calls per request: {calls}", flush=True)
        rows: dict = {name: {p: [] for p in paths} for name in ("version", "no-version")}
        ratios: dict = {name: {p: [] for p in paths} for name in ("version", "no-version")}
        bare_all: list[float] = []
        for r in range(args.read_rounds):
            order = ("version", "no-version") if r % 2 == 0 else ("no-version", "version")
            for p, path in paths.items():
                for name in order:
                    bare = servers["bare"].run(floor, per_batch)["cpu_us"]
                    ours = servers[name].run([["GET", path, None, 0]], per_batch)["cpu_us"]
                    bare_all.append(bare)
                    rows[name][p].append(ours)
                    ratios[name][p].append(ours / bare)
            print(f"read round {r + 1}: " + ", ".join(f"{n} {p} {rows[n][p][-1]:.0f} us" for n in rows for p in paths),
                  flush=True)
    finally:
        for server in servers.values():
            server.close()
    return {"per_batch": per_batch, "rounds": args.read_rounds, "bare_us": spread(bare_all), "calls": calls,
            "cpu_us": {n: {p: spread(v) for p, v in ps.items()} for n, ps in rows.items()},
            "ratio_to_bare": {n: {p: spread(v) for p, v in ps.items()} for n, ps in ratios.items()},
            "raw": {"bare": bare_all, "cpu_us": rows}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--read-rounds", type=int, default=7)
    parser.add_argument("--database", default="bench_fanout")
    parser.add_argument("--quick", action="store_true", help="1,000 subscribers, 2 rounds (CI)")
    parser.add_argument("--skip-read", action="store_true")
    parser.add_argument("--skip-edit", action="store_true", help="the read part only (one subscriber)")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.rounds, args.read_rounds = 1000, 2, 2
    from tests.support.harness import RedisServer

    url = data.database_url(args.database)
    data.recreate_database(args.database)
    redis = RedisServer().start()
    try:
        common.setup_django(url, redis.url, mode="ours")
        common.migrate()
        result = {"machine": common.machine(), "edit": edit_bench(args, redis)}
        if not args.skip_read:
            result["read"] = read_bench(args, redis, url)
        common.RESULTS.mkdir(parents=True, exist_ok=True)
        name = "fanout-quick.json" if args.quick else "fanout-read.json" if args.skip_edit else "fanout.json"
        (common.RESULTS / name).write_text(json.dumps(result, indent=1))
        print(json.dumps({"edit": result["edit"].get("summary"), **({"read": {k: v for k, v in result["read"].items()
                                                                          if k != "raw"}} if "read" in result else {})},
                         indent=1))
    finally:
        from django.db import connections

        from core.cache.watch import watcher

        watcher().stop()  # its connection must not outlive the database
        connections.close_all()
        redis.close()
        data.drop_database(args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
