"""The per-user memory figures of the operations guide's Sizing section, reproduced.

Loads the benchmark's data (bench/data.py: 10,000 users, each with a subscription, a coin ledger and
one chat session) into a database of its own, fills every key with `cache_warm --users-active-since
30 --rate 0` on a redis-server of its own, then prints `cache_stats --daily-users N` (text, and the
JSON into bench/results/sizing.json). Drops the database and stops Redis at the end.

    python bench/sizing.py [--daily-users 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, data  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daily-users", type=int, default=1_000_000)
    parser.add_argument("--database", default="bench_sizing")
    parser.add_argument("--quick", action="store_true", help="the small data set (seconds; not the guide's figures)")
    args = parser.parse_args()
    from tests.support.harness import RedisServer

    url = data.database_url(args.database)
    data.recreate_database(args.database)
    common.setup_django(url)
    common.migrate()
    print(f"loaded {data.load(url, data.QUICK if args.quick else data.FULL)}", flush=True)
    from django.db import connections

    connections.close_all()
    redis = RedisServer().start()
    env = {**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
           "DJANGO_SETTINGS_MODULE": "config.settings.bench", "BENCH_CACHE_MODE": "ours", "DATABASE_URL": url,
           "REDIS_URL": redis.url}

    def manage(*command: str) -> str:
        out = subprocess.run([sys.executable, str(common.ROOT / "manage.py"), *command], env=env, cwd=common.ROOT,
                             capture_output=True, text=True, timeout=1800)
        if out.returncode:
            raise RuntimeError(f"manage.py {' '.join(command)} failed: {out.stdout}\n{out.stderr}")
        return out.stdout

    try:
        print(manage("cache_warm", "--users-active-since", "30", "--rate", "0"))
        # Every key of the 10,000 users is measured (no sampling): the figures do not move between runs.
        stats = ("cache_stats", "--daily-users", str(args.daily_users), "--sample", "20000")
        print(manage(*stats))
        common.RESULTS.mkdir(parents=True, exist_ok=True)
        (common.RESULTS / ("sizing-quick.json" if args.quick else "sizing.json")).write_text(manage(*stats, "--json"))
    finally:
        redis.close()
        data.drop_database(args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
