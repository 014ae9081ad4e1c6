"""Redis down, stalled, paused, read-only (MISCONF), and restarted from an AOF that still holds
old values: the API keeps answering from PostgreSQL and never serves a stale value."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest
import redis

from core.cache.health import HEALTH
from core.models import PendingInvalidation
from tests.support.harness import RedisServer, cache_on_own_redis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

COOLDOWN = 0.3


@pytest.fixture
def faulty(settings):
    """A Redis of this test's own, with an AOF, that the test may kill, pause and restart."""
    settings.CACHE_BREAKER_COOLDOWN = COOLDOWN
    settings.CACHE_PENDING_RETRY = 60  # these tests drive recovery through requests; see the retry test
    with cache_on_own_redis(settings, "--appendonly", "yes", "--appendfsync", "always",
                            "--enable-protected-configs", "yes") as server:
        yield server


def wait_out_cooldown() -> None:
    time.sleep(COOLDOWN + 0.05)


READS = [
    "/api/me", "/api/me/coins", "/api/subscription", "/api/subscription/stats", "/api/characters",
    "/api/characters/luna", "/api/generation/settings",
]


def test_redis_down_every_endpoint_answers_from_the_database(faulty, alice, characters, user):
    for url in READS:
        assert alice.get(url).status_code == 200
    faulty.stop()

    for url in READS + ["/api/me/coins/history", "/api/plans", "/api/generations", "/api/chat/luna/sessions"]:
        response = alice.get(url)
        assert response.status_code == 200, (url, response.content)
    generation = alice.post("/api/generations", {"prompt": "a fox"}, format="json")
    assert generation.status_code == 202
    chat = alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json")
    assert chat.status_code == 202
    assert alice.get("/api/me/coins").json() == {"balance": 29}
    assert [m["seq"] for m in alice.get("/api/chat/luna/sessions/s1/messages").json()["messages"]] == [1, 2]
    assert alice.get("/api/subscription/stats").json()["generations"]["used_today"] == 1

    health = alice.get("/api/health")
    assert health.status_code == 200
    assert health.json()["cache"]["status"] == "down"
    assert health.json()["database"]["status"] == "up"


def test_login_and_register_work_with_redis_down(faulty, api, user):
    faulty.stop()
    token = api.post("/api/auth/token", {"email": "alice@example.com", "password": "correct-horse-battery-9"},
                     format="json")
    assert token.status_code == 200
    created = api.post("/api/auth/register", {"email": "bob@example.com", "password": "another-good-pass-7"},
                       format="json")
    assert created.status_code == 201


@pytest.mark.parametrize("how", ["sigstop", "client_pause"])
def test_stalled_redis_costs_at_most_one_timeout_per_request(faulty, alice, characters, how):
    for url in READS:
        alice.get(url)
    timeout = 0.25
    control = faulty.client()
    if how == "sigstop":
        faulty.pause()
    else:
        control.execute_command("CLIENT", "PAUSE", 2500, "ALL")
    try:
        latencies, statuses = [], []
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            for url in READS:
                t0 = time.monotonic()
                statuses.append(alice.get(url).status_code)
                latencies.append(time.monotonic() - t0)
    finally:
        if how == "sigstop":
            faulty.resume()
    assert set(statuses) == {200}
    assert max(latencies) < timeout * 2 + 0.2, max(latencies)
    # The breaker skips Redis while it is sick: most requests pay no timeout at all.
    slow = sum(1 for latency in latencies if latency >= timeout)
    assert slow <= 2.0 / COOLDOWN + 2, (slow, len(latencies))
    assert len(latencies) > 3 * slow

    # Once Redis answers again the breaker closes by itself and reads are cached again.
    time.sleep(2.6 if how == "client_pause" else 0)
    wait_out_cooldown()
    alice.get("/api/me/coins")
    assert HEALTH.state == "closed"
    assert faulty.client().exists(f"user:coins:{alice.get('/api/me').json()['id']}")


def test_invalidation_lost_while_down_is_applied_after_an_aof_restart(faulty, alice, user, redis_raw):
    key = f"user:coins:{user.id}"
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert faulty.client().exists(key)

    faulty.stop()  # SIGKILL: the AOF still holds the cached balance
    assert alice.post("/api/generations", {"prompt": "a fox"}, format="json").status_code == 202
    assert PendingInvalidation.objects.filter(key=key).exists()

    faulty.start()  # same dir: the old value comes back from the AOF, TTL and all
    assert b'"balance":30' in faulty.client().get(key)

    assert alice.get("/api/me/coins").json() == {"balance": 29}  # breaker still open: from the database
    wait_out_cooldown()
    assert alice.get("/api/me/coins").json() == {"balance": 29}  # synced: the old value was deleted first
    assert not PendingInvalidation.objects.exists()
    assert b'"balance":29' in faulty.client().get(key)


def test_an_idle_worker_applies_lost_invalidations_in_the_background(faulty, alice, user, settings):
    """No request needed: the recorded delete is retried (with backoff) until Redis takes it."""
    settings.CACHE_PENDING_RETRY = 0.2
    settings.CACHE_PENDING_WATCH = True
    key = f"user:coins:{user.id}"
    alice.get("/api/me/coins")
    faulty.stop()
    assert alice.post("/api/generations", {"prompt": "a fox"}, format="json").status_code == 202
    time.sleep(0.5)  # retries meanwhile fail against the dead server and back off
    faulty.start()
    deadline = time.monotonic() + 5
    while faulty.client().exists(key) or PendingInvalidation.objects.exists():
        assert time.monotonic() < deadline, "the lost delete was never applied"
        time.sleep(0.05)
    assert alice.get("/api/me/coins").json() == {"balance": 29}


def test_a_new_process_applies_pending_invalidations_before_its_first_cached_read(faulty, alice, user):
    key = f"user:coins:{user.id}"
    alice.get("/api/me/coins")
    faulty.stop()
    alice.post("/api/generations", {"prompt": "a fox"}, format="json")
    faulty.start()
    HEALTH.reset()  # a worker that never saw the outage: closed breaker, never synced
    assert alice.get("/api/me/coins").json() == {"balance": 29}
    assert not PendingInvalidation.objects.filter(key=key).exists()


def test_reconnection_to_a_restarted_redis_syncs_before_trusting_reads(faulty, alice, user):
    """Even with the breaker closed, a value read over a fresh connection is not trusted until the
    pending invalidations (recorded by another worker) have been applied."""
    key = f"user:coins:{user.id}"
    alice.get("/api/me/coins")
    alice.get("/api/me/coins")
    PendingInvalidation.objects.create(key=key)  # another worker's lost delete
    faulty.client().set(key, b'{"etag":"0000000000000000","data":{"balance":999}}')
    faulty.restart()
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert not PendingInvalidation.objects.exists()


def _break_snapshots(server: RedisServer) -> str:
    """Make BGSAVE fail so Redis refuses writes with MISCONF (as after a full disk)."""
    client = server.client()
    broken = tempfile.mkdtemp(prefix="redis-broken-")
    client.config_set("save", "3600 1")  # MISCONF applies only with snapshot points configured
    client.config_set("stop-writes-on-bgsave-error", "yes")
    client.config_set("dir", broken)
    os.rmdir(broken)
    client.bgsave()
    deadline = time.monotonic() + 10
    while client.info("persistence")["rdb_last_bgsave_status"] != "err":
        assert time.monotonic() < deadline, "BGSAVE did not fail"
        time.sleep(0.05)
    return broken


def test_misconf_read_only_redis_never_serves_a_value_it_could_not_invalidate(faulty, alice, user):
    key = f"user:coins:{user.id}"
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    broken = _break_snapshots(faulty)
    with pytest.raises(redis.ResponseError, match="MISCONF"):
        faulty.client().set("probe", "1")

    assert alice.post("/api/generations", {"prompt": "a fox"}, format="json").status_code == 202
    assert PendingInvalidation.objects.filter(key=key).exists()
    assert b'"balance":30' in faulty.client().get(key)  # the delete did not happen

    for _ in range(3):
        assert alice.get("/api/me/coins").json() == {"balance": 29}
        wait_out_cooldown()

    os.makedirs(broken)
    faulty.client().config_set("dir", broken)  # chdir into the new directory
    faulty.client().bgsave()
    deadline = time.monotonic() + 10
    while faulty.client().info("persistence")["rdb_last_bgsave_status"] != "ok":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wait_out_cooldown()
    assert alice.get("/api/me/coins").json() == {"balance": 29}
    assert not PendingInvalidation.objects.exists()
    shutil.rmtree(broken, ignore_errors=True)


def test_cache_errors_are_counted_and_logged_without_flooding(faulty, alice, caplog):
    from core import metrics

    alice.get("/api/me")
    before = sum(s.value for m in metrics.cache_errors.collect() for s in m.samples if s.name.endswith("_total"))
    faulty.stop()
    caplog.clear()
    for _ in range(20):
        alice.get("/api/me/coins")
        HEALTH.open_until = 0  # force a retry of Redis on every request
    after = sum(s.value for m in metrics.cache_errors.collect() for s in m.samples if s.name.endswith("_total"))
    assert after - before >= 20
    warnings = [r for r in caplog.records if r.name == "core.cache" and r.levelname == "WARNING"]
    assert 1 <= len(warnings) <= 6


def test_throttled_logins_with_redis_down_do_not_flood_the_log(faulty, api, user, caplog):
    faulty.stop()
    caplog.clear()
    for _ in range(10):
        response = api.post("/api/auth/token", {"email": "alice@example.com", "password": "correct-horse-battery-9"},
                            format="json")
        assert response.status_code == 200
    noisy = [r for r in caplog.records if r.levelno >= 30 and r.name != "django.request"]
    assert len(noisy) <= 3, [r.getMessage() for r in noisy]
    assert not any(r.exc_info for r in caplog.records)


def test_an_exhausted_connection_pool_is_not_a_redis_fault(alice, characters, redis_raw, settings):
    """More threads than the pool has connections is this process's limit, not a sick Redis: the
    request that met it reads from the database, and nothing else stops using the cache."""
    from django_redis import get_redis_connection

    settings.CACHE_BREAKER_COOLDOWN = 30  # an opened breaker would still be open below
    alice.get("/api/me")  # auth's key and this thread's read connection are in place
    pool = get_redis_connection("default").connection_pool
    pool.max_connections = 4
    held = []
    try:
        while True:
            held.append(pool.get_connection())
    except redis.exceptions.MaxConnectionsError:
        pass
    try:
        assert alice.get("/api/characters/luna").status_code == 200  # its lease found no connection
    finally:
        for connection in held:
            pool.release(connection)
        pool.max_connections = 1000
    assert not redis_raw.exists("character:luna")
    assert alice.get("/api/characters/luna").status_code == 200
    assert redis_raw.exists("character:luna")  # cached: the pool's limit did not open the breaker
