"""CACHE_INVALIDATION_REPLICAS: a delete counts only once a replica has it (WAIT on the same
connection); unconfirmed, it is recorded as pending and replayed. Real primary and replica."""

from __future__ import annotations

import copy
import json
import time

import pytest

from core.cache.health import HEALTH
from core.models import PendingInvalidation
from tests.support.harness import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def replicated(settings):
    primary = RedisServer().start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(primary.port)).start()
    deadline = time.monotonic() + 10
    while replica.client().info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never connected"
        time.sleep(0.05)
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = primary.url
    settings.CACHES = caches
    settings.CACHE_INVALIDATION_REPLICAS = 1
    settings.CACHE_INVALIDATION_WAIT_MS = 200  # below the 0.25 s socket timeout; a loaded machine confirms in time
    settings.CACHE_BREAKER_COOLDOWN = 0.2
    settings.CACHE_PENDING_RETRY = 60
    HEALTH.reset()
    yield primary, replica
    replica.close()
    primary.close()
    HEALTH.reset()


def test_a_delete_the_replica_confirmed_is_done(replicated, alice, user):
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    primary, replica = replicated
    alice.get("/api/me/coins")
    coins_apply(user_id=user.id, amount=5, reason=CoinLedgerEntry.Reason.ADJUSTMENT)  # a plain invalidation
    assert not PendingInvalidation.objects.exists()
    assert not replica.client().exists(f"user:coins:{user.id}")


def test_an_amendment_the_replica_confirmed_is_done(replicated, alice, user):
    """A generation stores the new balance rather than deleting it (amend_after_commit): the replica
    has that value, confirmed by WAIT like a delete."""
    primary, replica = replicated
    alice.get("/api/me/coins")
    assert alice.post("/api/generations", {"prompt": "a fox"}, format="json").status_code == 202
    assert not PendingInvalidation.objects.exists()
    assert json.loads(replica.client().get(f"user:coins:{user.id}"))["data"] == {"balance": 29}


def test_a_delete_no_replica_confirmed_is_pending_until_one_does(replicated, alice, user):
    primary, replica = replicated
    key = f"user:coins:{user.id}"
    alice.get("/api/me/coins")
    deadline = time.monotonic() + 5
    while not replica.client().exists(key):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    replica.pause()  # its replication stalls: the primary takes the delete, nobody confirms it
    try:
        assert alice.post("/api/generations", {"prompt": "a fox"}, format="json").status_code == 202
        assert PendingInvalidation.objects.filter(key=key).exists()
        for _ in range(3):  # meanwhile reads come from the database, never the old value
            assert alice.get("/api/me/coins").json() == {"balance": 29}
    finally:
        replica.resume()
    time.sleep(0.25)  # the breaker's cooldown
    assert alice.get("/api/me/coins").json() == {"balance": 29}  # replayed and confirmed first
    assert not PendingInvalidation.objects.exists()
