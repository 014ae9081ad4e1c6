"""core.cache.api.amend_after_commit: a write stores the value its commit made instead of deleting the key,
under the same lease protocol as a read-through populate; whenever that cannot be proven safe, the
key is deleted as any invalidation would."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from accounts.cache import USER_COINS, coins_set_to, coins_target
from chat.cache import CHAT_HISTORY
from core import metrics
from core.cache.api import Payload, amend_after_commit, invalidate
from core.models import PendingInvalidation
from subscriptions.cache import SUBSCRIPTION_STATS

pytestmark = pytest.mark.django_db(transaction=True)


def cached(redis_raw, key: str):
    raw = redis_raw.get(key)
    return None if raw is None else json.loads(raw)["data"]


def amended_count(family: str) -> float:
    return metrics.cache_invalidations.labels(family=family, result="amended")._value.get()


def set_balance(user, balance: int) -> None:
    from accounts.models import User

    User.objects.filter(pk=user.pk).update(coin_balance=balance)


# --- the protocol ----------------------------------------------------------------------------------


def test_the_changed_value_is_stored_and_the_lease_is_gone(user, alice, redis_raw):
    alice.get("/api/me/coins")
    key = f"user:coins:{user.id}"
    before = amended_count("user:coins")
    with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
        assert redis_raw.get(f"lease:{key}") is not None  # held from before the write
        with transaction.atomic():
            set_balance(user, 77)
            invalidate((USER_COINS, {"user_id": user.id}))  # taken over by the amendment
        coins.change(coins_set_to(77))
    assert cached(redis_raw, key) == {"balance": 77} == USER_COINS.load(user_id=user.id)
    assert redis_raw.ttl(key) > 0
    assert not redis_raw.exists(f"lease:{key}")
    assert amended_count("user:coins") == before + 1


def test_another_commits_invalidation_in_between_deletes_rather_than_amends(user, alice, redis_raw):
    """Someone else's commit ran its delete (key and lease) while our write ran, and a reader
    cached a value again: our old-value-plus-change may miss their change, so the key goes."""
    alice.get("/api/me/coins")
    key = f"user:coins:{user.id}"
    with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
        with transaction.atomic():
            set_balance(user, 77)
        redis_raw.delete(key, f"lease:{key}")  # their invalidation
        alice.get("/api/me/coins")  # a reader stores a value again, under a lease of its own
        assert redis_raw.exists(key)
        coins.change(coins_set_to(77))
    assert redis_raw.get(key) is None
    assert not redis_raw.exists(f"lease:{key}")


def test_a_write_that_fails_releases_the_lease_and_leaves_the_value(user, alice, redis_raw):
    alice.get("/api/me/coins")
    key = f"user:coins:{user.id}"
    with pytest.raises(RuntimeError), amend_after_commit(coins_target(user_id=user.id)) as (coins,), transaction.atomic():
        set_balance(user, 77)
        coins.change(coins_set_to(77))
        raise RuntimeError("the write failed")
    assert cached(redis_raw, key) == {"balance": 30}
    assert not redis_raw.exists(f"lease:{key}")


def test_a_key_that_is_not_cached_gets_no_lease_and_is_deleted_as_usual(user, redis_raw):
    key = f"user:coins:{user.id}"
    with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
        assert not redis_raw.exists(f"lease:{key}")  # a reader that misses meanwhile need not wait
        with transaction.atomic():
            set_balance(user, 77)
            invalidate((USER_COINS, {"user_id": user.id}))
            redis_raw.set(key, Payload.of({"balance": 30}).pack())  # a reader's value, stale now
        coins.change(coins_set_to(77))
    assert redis_raw.get(key) is None


def test_a_change_that_gives_up_deletes_the_key(user, alice, redis_raw):
    alice.get("/api/me/coins")
    key = f"user:coins:{user.id}"
    with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
        coins.change(lambda value: None)
    assert redis_raw.get(key) is None
    assert not redis_raw.exists(f"lease:{key}")


def test_without_a_change_the_key_is_deleted(user, alice, redis_raw):
    alice.get("/api/me/coins")
    with amend_after_commit(coins_target(user_id=user.id)):
        pass
    assert redis_raw.get(f"user:coins:{user.id}") is None


def test_a_nested_block_adds_its_changes_to_the_outer_amendment(user, alice, redis_raw):
    alice.get("/api/me/coins")
    target = coins_target(user_id=user.id)
    with amend_after_commit(target) as (outer,):
        with amend_after_commit(target) as (inner,), transaction.atomic():
            assert inner is outer
            set_balance(user, 50)
            inner.change(coins_set_to(50))
        set_balance(user, 40)
        outer.change(coins_set_to(40))
    assert cached(redis_raw, f"user:coins:{user.id}") == {"balance": 40}


def test_other_keys_are_invalidated_as_usual_inside_the_block(user, alice, redis_raw):
    alice.get("/api/subscription/stats")
    alice.get("/api/me/coins")
    with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
        invalidate((SUBSCRIPTION_STATS, {"user_id": user.id}))
        coins.change(coins_set_to(30))
    assert redis_raw.get(f"subscription:stats:{user.id}") is None
    assert cached(redis_raw, f"user:coins:{user.id}") == {"balance": 30}


def test_the_amendment_waits_for_the_outer_transaction(user, alice, redis_raw):
    alice.get("/api/me/coins")
    key = f"user:coins:{user.id}"
    with transaction.atomic():
        with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
            set_balance(user, 77)
            coins.change(coins_set_to(77))
        assert cached(redis_raw, key) == {"balance": 30}  # not committed yet
    assert cached(redis_raw, key) == {"balance": 77}


def test_a_redis_failure_at_commit_records_the_delete(user, alice, redis_raw):
    alice.get("/api/me/coins")
    key = f"user:coins:{user.id}"
    with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
        set_balance(user, 77)
        coins.change(coins_set_to(77))
        # Redis refuses every write from now on (NOREPLICAS: as a failed snapshot's MISCONF would).
        redis_raw.config_set("min-replicas-to-write", 1)
    try:
        assert PendingInvalidation.objects.filter(key=key).exists()
        assert cached(redis_raw, key) == {"balance": 30}  # not amended: the read path bypasses it now
    finally:
        redis_raw.config_set("min-replicas-to-write", 0)


def test_with_the_layer_off_nothing_touches_redis(user, alice, redis_raw, settings):
    alice.get("/api/me/coins")
    settings.CACHE_LAYER_ENABLED = False
    with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
        coins.change(coins_set_to(77))
    assert not redis_raw.exists(f"lease:user:coins:{user.id}")
    assert cached(redis_raw, f"user:coins:{user.id}") == {"balance": 30}


# --- the writes that amend: the cached value is what the loader would build now -----------------


def test_chat_posts_keep_history_and_stats_cached_and_equal_to_the_database(user, alice, characters, redis_raw,
                                                                             settings):
    settings.CACHE_LAYER_ENABLED = True
    settings.CHAT_HISTORY_CACHED_MESSAGES = 3  # the page fills and then slides, has_more flips
    url = "/api/chat/luna/sessions/s1/messages"
    parts = {"user_id": user.id, "character": "luna", "session": "s1"}
    history_key, stats_key = CHAT_HISTORY.key(**parts), f"subscription:stats:{user.id}"
    assert alice.post(url, {"content": "first"}, format="json").status_code == 202  # creates the session
    before = amended_count("chat:history")
    for n in range(4):
        assert alice.get(url).status_code == 200
        assert alice.get("/api/subscription/stats").status_code == 200
        assert alice.post(url, {"content": f"message {n}"}, format="json").status_code == 202
        assert cached(redis_raw, history_key) == CHAT_HISTORY.load(**parts)
        assert cached(redis_raw, stats_key) == SUBSCRIPTION_STATS.load(user_id=user.id)
    assert cached(redis_raw, history_key)["has_more"] is True
    assert amended_count("chat:history") == before + 8  # the message and the reply, each time


def test_a_generation_keeps_coins_and_stats_cached_and_equal_to_the_database(user, alice, redis_raw):
    alice.get("/api/me/coins")
    alice.get("/api/subscription/stats")
    response = alice.post("/api/generations", {"prompt": "a lighthouse"}, format="json")
    assert response.status_code == 202, response.json()
    assert cached(redis_raw, f"user:coins:{user.id}") == USER_COINS.load(user_id=user.id)
    assert cached(redis_raw, f"user:coins:{user.id}")["balance"] < 30
    stats = cached(redis_raw, f"subscription:stats:{user.id}")
    assert stats == SUBSCRIPTION_STATS.load(user_id=user.id)
    assert stats["generations"]["used_today"] == 1 and stats["coins_spent"] > 0


def test_cached_stats_of_another_day_are_deleted_not_amended(user, alice, redis_raw):
    alice.get("/api/subscription/stats")
    key = f"subscription:stats:{user.id}"
    stale = cached(redis_raw, key) | {"day": "2000-01-01"}
    redis_raw.set(key, Payload.of(stale).pack())
    assert alice.post("/api/generations", {"prompt": "a lighthouse"}, format="json").status_code == 202
    assert redis_raw.get(key) is None
