"""Every write `make run` offers works on the embedded SQLite default (no DATABASE_URL): a
subprocess (tests/sqlite_writes.py) migrates a fresh SQLite file, loads the demo data and drives
the API. Concurrent writers are serialised by SQLite and must all succeed with nothing lost; the
race guarantees under real concurrency are proved on PostgreSQL (test_races, the apps' tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("sqlite_writes.py")


@pytest.fixture(scope="module")
def seen(tmp_path_factory) -> dict:
    from tests.support.harness import RedisServer

    redis = RedisServer().start()
    try:
        env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CACHE_NAMESPACE")}
        env["REDIS_URL"] = redis.url
        done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path_factory.mktemp("sqlite") / "db.sqlite3")],
                              env=env, capture_output=True, text=True, timeout=300)
    finally:
        redis.close()
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_it_ran_on_sqlite(seen):
    assert seen["vendor"] == "sqlite"


def test_register_log_in_and_pay_for_a_plan_offline(seen):
    assert (seen["register"], seen["login"], seen["checkout"], seen["paid"]) == (201, 200, 202, 200)
    assert seen["plan_after_payment"] == "pro"
    assert seen["coins_after_payment"] == seen["coins_at_start"] + 1500


def test_a_generation_spends_its_coins_once(seen):
    status, state, cost = seen["generation"]
    assert (status, state) == (202, "completed") and cost > 0
    assert seen["generation_retry"] == [202, True]  # the same idempotency key: the first one, not charged again
    assert seen["coins_after_generation"] == seen["coins_after_payment"] - cost
    assert seen["ledger_head"] == ["spend", -cost, seen["coins_after_generation"], "generation:1"]


def test_chat_posts_keep_their_order_and_count_their_use(seen):
    assert seen["chat"] == [[202, 1, 2], [202, 3, 4]]
    assert seen["greeted"] == [True, False]  # the second post's responder saw the first exchange
    assert seen["chat_history"] == [[1, "user"], [2, "assistant"], [3, "user"], [4, "assistant"]]
    assert seen["stats"] == {"generations": 1, "messages": 2, "coins_spent": seen["generation"][2]}


def test_a_downgrade_is_scheduled(seen):
    assert seen["downgrade"] == [200, "free"]


def test_concurrent_writers_all_succeed_and_lose_nothing(seen):
    assert seen["concurrent_generations"] == [202] * 8
    assert seen["concurrent_coins_add_up"] and seen["ledger_adds_up"] and seen["usage_adds_up"]
    assert seen["concurrent_chat"] == [202] * 8
    assert seen["busy_history"] == list(range(1, 17))
