"""The pending-invalidation watcher: a delete that failed on another worker or host makes this
process stop trusting Redis within 2 s (NOTIFY, or the periodic look when a notification is
missed), and this process applies it in the background once Redis takes deletes again."""

from __future__ import annotations

import copy
import time

import pytest

from core.cache import pending
from core.cache.health import HEALTH
from core.cache.watch import watcher
from core.models import PendingInvalidation
from core.testing import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def shared_redis():
    """One Redis for this module's tests and the gunicorn they share."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def own_redis(shared_redis, settings):
    shared_redis.wipe()
    refuse_writes(shared_redis, refuse=False)
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = shared_redis.url
    settings.CACHES = caches
    settings.CACHE_PENDING_WATCH = True
    settings.CACHE_PENDING_RETRY = 0.2
    settings.CACHE_BREAKER_COOLDOWN = 0.3
    HEALTH.reset()
    yield shared_redis
    watcher().stop()
    refuse_writes(shared_redis, refuse=False)
    HEALTH.reset()


def refuse_writes(server: RedisServer, refuse: bool = True) -> None:
    """NOREPLICAS: Redis keeps serving reads and refuses every write, deletes included."""
    server.client().config_set("min-replicas-to-write", 1 if refuse else 0)


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


def balance_within(client, expected: int, seconds: float) -> float:
    started = time.monotonic()
    while True:
        balance = client.get("/api/me/coins").json()["balance"]
        if balance == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"still {balance} after {seconds} s"
        time.sleep(0.02)


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "missed-notify"])
def test_a_delete_that_failed_elsewhere_is_honoured_here_within_2s(own_redis, alice, user, notify):
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/me/coins").json() == {"balance": 30}  # cached, watcher running
    assert watcher().listening or not notify
    refuse_writes(own_redis)

    another_host_changes_the_balance(user.id, 7, notify=notify)

    assert balance_within(alice, 7, 2.0) < 2.0  # from the database: Redis still holds 30
    assert b'"balance":30' in own_redis.client().get(f"user:coins:{user.id}")
    for _ in range(5):  # and it stays that way while the delete cannot be applied
        assert alice.get("/api/me/coins").json() == {"balance": 7}
        time.sleep(0.1)

    refuse_writes(own_redis, refuse=False)
    deadline = time.monotonic() + 5
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
    from django.db import connection

    from core.testing import Gunicorn

    server = Gunicorn(connection.settings_dict["NAME"], shared_redis.url, CACHE_PENDING_WATCH="1",
                      CACHE_PENDING_RETRY="0.2", CACHE_BREAKER_COOLDOWN="0.3")
    yield server
    server.close()


def _deactivate(user):
    user.is_active = False
    user.save()


def _change_password(user):
    from accounts.services import user_change_password
    from conftest import PASSWORD

    user_change_password(user_id=user.id, current_password=PASSWORD, new_password="a-brand-new-pass-42")


def _delete(user):
    user.delete()


@pytest.mark.parametrize("revoke", [_deactivate, _change_password, _delete], ids=["deactivate", "password", "delete"])
@pytest.mark.parametrize("fault", ["redis refuses writes", "this host cannot reach redis"])
def test_a_revoked_token_is_refused_by_every_worker_of_another_host_within_2s(
    own_redis, other_host, make_user, settings, revoke, fault
):
    from accounts.apis import tokens_for
    from core.testing import free_port, request

    user = make_user("revoked@example.com")
    headers = {"Authorization": f"Bearer {tokens_for(user)['access']}"}
    for _ in range(16):  # both workers have the user cached
        assert request("127.0.0.1", other_host.port, "GET", "/api/me", headers=headers)[0] == 200
    assert own_redis.client().exists("user:email:revoked@example.com")

    if fault == "redis refuses writes":
        refuse_writes(own_redis)
    else:  # this host's deletes fail; the other host still reaches Redis
        caches = copy.deepcopy(settings.CACHES)
        caches["default"]["LOCATION"] = f"redis://127.0.0.1:{free_port()}/0"
        settings.CACHES = caches
        HEALTH.reset()

    revoke(user)
    revoked_at = time.monotonic()
    assert PendingInvalidation.objects.exists() or not own_redis.client().exists("user:email:revoked@example.com")

    refused_since = None
    while True:
        status = request("127.0.0.1", other_host.port, "GET", "/api/me", headers=headers)[0]
        assert status in (200, 401), status
        now = time.monotonic()
        if status == 200:
            refused_since = None
            assert now - revoked_at < 2.0, "a revoked token was still accepted after 2 s"
        elif refused_since is None:
            refused_since = now
        elif now - refused_since > 1.0:  # refused by every worker, steadily
            break
