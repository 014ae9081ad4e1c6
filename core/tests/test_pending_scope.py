"""A delete Redis refuses makes only its own key bypass the cache, on every worker of every host,
until the delete is applied and confirmed; every other key stays served from Redis. Two hosts:
this test process and a gunicorn with 2 workers, on one Redis that refuses writes (NOREPLICAS)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from core.models import PendingInvalidation
from tests.support.harness import Gunicorn, request, until
from tests.support.pending_hosts import refuse_writes, start_other_host

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def quick_look(settings):
    settings.CACHE_PENDING_CHECK = 0.2  # this process's periodic look at the table, as the other host's


@pytest.fixture(scope="module")
def other_host(shared_redis, django_db_setup):
    server = start_other_host(shared_redis, CACHE_PENDING_CHECK="0.2")
    yield server
    server.close()


def bearer(user) -> dict[str, str]:
    from accounts.apis import tokens_for

    return {"Authorization": f"Bearer {tokens_for(user)['access']}"}


def balances_there(host: Gunicorn, user) -> list[int]:
    """The user's balance from every worker of the other host (one request per worker at once)."""
    headers, results = bearer(user), [None] * host.workers

    def one(i: int) -> None:
        status, _, body = request("127.0.0.1", host.port, "GET", "/api/me/coins", headers=headers)
        assert status == 200, body
        results[i] = json.loads(body)["balance"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(host.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert None not in results
    return results  # type: ignore[return-value]


def set_balance_behind_the_cache(user, balance: int) -> None:
    """A change no invalidation follows: a read that still answers the old balance came from Redis."""
    from accounts.models import User

    User.objects.filter(pk=user.id).update(coin_balance=balance)


def test_a_refused_delete_bypasses_its_key_only_on_every_host(
    own_redis, other_host, make_user, client_for, django_assert_num_queries
):
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    alice, bob = make_user("alice@example.com", coins=30), make_user("bob@example.com", coins=50)
    here_alice, here_bob = client_for(alice), client_for(bob)
    for _ in range(4):  # cached here and on every worker there
        assert here_alice.get("/api/me/coins").json() == {"balance": 30}
        assert here_bob.get("/api/me/coins").json() == {"balance": 50}
        assert set(balances_there(other_host, alice)) == {30}
        assert set(balances_there(other_host, bob)) == {50}
    alice_key = f"user:coins:{alice.id}"
    refuse_writes(own_redis)

    coins_apply(user_id=alice.id, amount=-5, reason=CoinLedgerEntry.Reason.SPEND, reference="test")  # its delete is refused
    assert PendingInvalidation.objects.filter(key=alice_key).exists()
    assert b'"balance":30' in own_redis.client().get(alice_key)  # Redis still holds the old value
    set_balance_behind_the_cache(bob, 999)

    # Here: alice's key from the database, at once; bob's from Redis, without a query.
    assert here_alice.get("/api/me/coins").json() == {"balance": 25}
    with django_assert_num_queries(0):
        assert here_bob.get("/api/me/coins").json() == {"balance": 50}
    # There: every worker learns of the pending key (a few ms) and keeps serving bob from Redis.
    until(lambda: set(balances_there(other_host, alice)) == {25}, "the other host never bypassed the pending key")
    for _ in range(5):  # and so it stays while Redis refuses the delete
        assert set(balances_there(other_host, alice)) == {25}
        assert set(balances_there(other_host, bob)) == {50}
        assert here_alice.get("/api/me/coins").json() == {"balance": 25}
        time.sleep(0.1)
    assert b'"balance":30' in own_redis.client().get(alice_key)  # no bypassed read filled it

    refuse_writes(own_redis, refuse=False)
    until(lambda: not PendingInvalidation.objects.exists(), "the pending delete was never applied")
    assert own_redis.client().get(alice_key) in (None, b"") or b'"balance":25' in own_redis.client().get(alice_key)
    # Trusted again everywhere: the key is cached anew and served from Redis.
    assert here_alice.get("/api/me/coins").json() == {"balance": 25}
    until(lambda: set(balances_there(other_host, alice)) == {25} and own_redis.client().exists(alice_key),
          "alice's balance was never cached again")
    set_balance_behind_the_cache(alice, 7)
    with django_assert_num_queries(0):
        assert here_alice.get("/api/me/coins").json() == {"balance": 25}
    until(lambda: set(balances_there(other_host, alice)) == {25}, "the other host never trusted the key again")


def test_past_the_limit_every_key_bypasses_until_the_table_shrinks(
    own_redis, make_user, client_for, settings, django_assert_num_queries
):
    """The safe fallback: a worker that would hold more than CACHE_PENDING_KEYS_MAX pending keys
    reads every key from the database until the pending deletes are applied."""
    from core.cache import pending

    settings.CACHE_PENDING_KEYS_MAX = 2
    bob = make_user("bob@example.com", coins=50)
    here_bob = client_for(bob)
    for _ in range(2):
        assert here_bob.get("/api/me/coins").json() == {"balance": 50}
    refuse_writes(own_redis)
    pending.record_pending_invalidations([f"user:coins:{n}" for n in (9991, 9992, 9993)])  # another host's
    set_balance_behind_the_cache(bob, 999)

    for _ in range(3):
        assert here_bob.get("/api/me/coins").json() == {"balance": 999}  # bypassed, though not pending
        time.sleep(0.1)

    refuse_writes(own_redis, refuse=False)
    until(lambda: not PendingInvalidation.objects.exists(), "the pending deletes were never applied")
    until(lambda: here_bob.get("/api/me/coins").json() == {"balance": 50}, "Redis was never trusted again")
    with django_assert_num_queries(0):
        assert here_bob.get("/api/me/coins").json() == {"balance": 50}
