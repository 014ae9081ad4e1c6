"""The pending-invalidation watcher: a delete that failed on another worker or host makes this
process read that key from the database (by the NOTIFY alone, or by the periodic look when a notification is
missed), and this process applies it in the background once Redis takes deletes again. A revoked
token is refused by every worker of another host within 2 s of its revocation (counted from when
each request is sent); the time to refuse under load is measured by bench/chaos.py."""

from __future__ import annotations

import copy
import time

import pytest

from core.cache import pending
from core.cache.health import HEALTH
from core.cache.watch import watcher
from core.models import PendingInvalidation
from tests.support.pending_hosts import refuse_writes, start_other_host
from tests.support.revoked_tokens import REVOCATIONS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def another_host_changes_the_balance(user_id: int, balance: int, *, notify: bool = True) -> None:
    """What a host whose delete failed leaves behind: the committed row and a pending record."""
    from django.db import connection

    from accounts.models import User

    User.objects.filter(pk=user_id).update(coin_balance=balance)
    if notify:
        pending.record_pending_invalidations([f"user:coins:{user_id}"])
    else:  # a notification that never arrived (database restart, SQLite)
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO core_pendinginvalidation (key, created_at) VALUES (%s, now())",
                           [f"user:coins:{user_id}"])


def balance_becomes(client, expected: int, timeout: float = 30.0) -> None:
    """Until the API answers ``expected``. The deadline is generous on purpose: what the tests below
    pin is which mechanism told this process (the time to refuse is measured by bench/chaos.py)."""
    deadline = time.monotonic() + timeout
    while (balance := client.get("/api/me/coins").json()["balance"]) != expected:
        assert time.monotonic() < deadline, f"still {balance} after {timeout} s"
        time.sleep(0.02)


# "notify": the periodic look is an hour away, so only the NOTIFY can have woken the watcher;
# "missed-notify": no NOTIFY is sent, so only the periodic look (every 0.2 s here) can find the row.
@pytest.mark.parametrize(("notify", "check_every"), [(True, 3600.0), (False, 0.2)], ids=["notify", "missed-notify"])
def test_a_delete_that_failed_elsewhere_is_honoured_here(own_redis, alice, user, settings, notify, check_every):
    settings.CACHE_PENDING_CHECK = check_every  # read by the watcher after each look
    looks = watcher().looks
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/me/coins").json() == {"balance": 30}  # cached, watcher running
    deadline = time.monotonic() + 30
    # Its thread starts with the first connection: LISTEN, then its first look at the (empty) table;
    # with "notify" the next look is an hour away.
    while watcher().looks == looks or (notify and not watcher().listening):
        assert time.monotonic() < deadline, "the watcher never started"
        time.sleep(0.02)
    refuse_writes(own_redis)

    another_host_changes_the_balance(user.id, 7, notify=notify)

    balance_becomes(alice, 7)  # from the database: Redis still holds 30 (the watcher told us)
    assert b'"balance":30' in own_redis.client().get(f"user:coins:{user.id}")
    for _ in range(5):  # and it stays that way while the delete cannot be applied
        assert alice.get("/api/me/coins").json() == {"balance": 7}
        time.sleep(0.1)

    refuse_writes(own_redis, refuse=False)
    deadline = time.monotonic() + 30  # retries back off up to CACHE_PENDING_RETRY_MAX
    while PendingInvalidation.objects.exists() or own_redis.client().exists(f"user:coins:{user.id}"):
        assert time.monotonic() < deadline, "the watcher never applied the pending delete"
        time.sleep(0.05)
    assert alice.get("/api/me/coins").json() == {"balance": 7}
    assert alice.get("/api/me/coins").json() == {"balance": 7}
    assert not HEALTH.needs_sync  # trusted again: warm reads from Redis
    assert b'"balance":7' in own_redis.client().get(f"user:coins:{user.id}")


def test_a_warm_read_runs_no_sql_while_nothing_is_pending(own_redis, alice, user, django_assert_num_queries):
    alice.get("/api/me/coins")
    alice.get("/api/me/coins")
    with django_assert_num_queries(0):
        assert alice.get("/api/me/coins").json() == {"balance": 30}


# --- two processes: this test process is one host, a gunicorn with 2 workers is another ---------


@pytest.fixture(scope="module")
def other_host(shared_redis, django_db_setup):
    server = start_other_host(shared_redis)
    yield server
    server.close()


@pytest.mark.parametrize("revocation", sorted(REVOCATIONS))
@pytest.mark.parametrize("fault", ["redis refuses writes", "this host cannot reach redis"])
def test_a_revoked_token_is_refused_by_every_worker_of_another_host_within_2s(
    own_redis, other_host, make_user, settings, revocation, fault
):
    from tests.support.harness import free_port
    from tests.support.revoked_tokens import RevokedTokens

    user = make_user("revoked@example.com")
    tokens = RevokedTokens({revocation: user}, [other_host])
    tokens.warm()  # both workers (and this process) have the user cached
    assert own_redis.client().exists("user:email:revoked@example.com")

    if fault == "redis refuses writes":
        refuse_writes(own_redis)
    else:  # this host's deletes fail; the other host still reaches Redis
        caches = copy.deepcopy(settings.CACHES)
        caches["default"]["LOCATION"] = f"redis://127.0.0.1:{free_port()}/0"
        settings.CACHES = caches
        HEALTH.reset()

    tokens.revoke(revocation)
    assert PendingInvalidation.objects.exists() or not own_redis.client().exists("user:email:revoked@example.com")
    tokens.refused()


# --- an idle watcher sleeps: every process runs one, so it must cost nothing while nothing happens ---


def seen_within(condition, seconds: float) -> float:
    """How long ``condition`` took to hold, failing past ``seconds``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"not seen within {seconds} s"
        time.sleep(0.005)
    return time.monotonic() - start


def test_an_idle_watcher_sleeps_until_a_notify_or_a_wake_up(settings):
    settings.CACHE_PENDING_WATCH = True
    settings.CACHE_PENDING_CHECK = 5.0  # its next deadline after the first look
    settings.CACHE_PENDING_RETRY = 60.0  # no background drain inside the test
    idle = watcher()
    looks = idle.looks
    idle.ensure_running()
    seen_within(lambda: idle.looks > looks and idle.listening, 30.0)  # LISTEN sent, first look done

    waits = idle.waits
    time.sleep(2.0)
    # Nothing happened, so nothing woke it (sleeping in 0.1 s slices it woke ~20 times).
    assert idle.waits - waits <= 2

    # Still woken at once (0.5 s: a bound on a shared machine, far from the 5 s deadline) by a
    # NOTIFY sent on another connection...
    pending.notify("user:coins:424242")
    seen_within(lambda: pending.PENDING.holds("user:coins:424242"), 0.5)
    # ...and by a local wake-up: a record in this process, then stop().
    waits = idle.waits
    idle.retry_soon()
    seen_within(lambda: idle.waits > waits, 0.5)
    start = time.monotonic()
    idle.stop()
    assert time.monotonic() - start < 0.5
