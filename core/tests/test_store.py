"""The read path (core.cache.api.fetch): the stale-set race (leases + compare-and-set populate), the namespace prefix,
JSON values, and what a reader does with a value it cannot read."""

from __future__ import annotations

import json
import time

import pytest

from accounts.cache import USER_COINS
from characters.cache import CHARACTER, CHARACTERS_LIST
from core.cache.api import Payload, fetch, invalidate
from core.cache.hooks import HOOKS, LEASE_KEEPER

pytestmark = pytest.mark.django_db(transaction=True)


# --- the stale-set race, made deterministic ------------------------------------------------------
# The reader misses, loads the OLD row, and before it stores that row a writer commits and
# invalidates. Running the writer inside the wrapped loader (same thread, autocommit, so its
# on_commit delete runs at once) puts the write exactly in that window.


def test_stale_set_race_per_user_coins(user, alice, redis_raw, monkeypatch):
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    key = f"user:coins:{user.id}"
    real = USER_COINS.loader
    raced = []

    def reader_then_writer(*, user_id):
        old = real(user_id=user_id)  # the reader has the old row in hand
        if not raced:
            raced.append(old)
            coins_apply(user_id=user_id, amount=-7, reason=CoinLedgerEntry.Reason.SPEND)  # commits, invalidates
        return old

    monkeypatch.setitem(USER_COINS.__dict__, "loader", reader_then_writer)
    response = alice.get("/api/me/coins")
    assert response.json() == {"balance": 30}  # this reader answers with what it read...
    assert raced == [{"balance": 30}]
    assert redis_raw.get(key) is None  # ...but could not store it
    assert not redis_raw.exists(f"lease:{key}")

    assert alice.get("/api/me/coins").json() == {"balance": 23}  # the next read sees the write
    assert json.loads(redis_raw.get(key))["data"] == {"balance": 23}


def test_stale_set_race_shared_characters_list(alice, characters, redis_raw, monkeypatch):
    from characters.services import characters_set_active

    real = CHARACTERS_LIST.loader
    raced = []

    def reader_then_writer():
        old = real()
        if not raced:
            raced.append(old)
            characters_set_active(names=["rex"], active=False)  # an update(): the service invalidates
        return old

    monkeypatch.setitem(CHARACTERS_LIST.__dict__, "loader", reader_then_writer)
    response = alice.get("/api/characters")
    assert "rex" in [c["name"] for c in response.json()]
    assert raced
    assert redis_raw.get("characters:list") is None

    names = [c["name"] for c in alice.get("/api/characters").json()]
    assert names == ["luna", "nyx"]
    assert [c["name"] for c in json.loads(redis_raw.get("characters:list"))["data"]] == ["luna", "nyx"]


def test_stale_set_race_through_a_signal(alice, characters, redis_raw, monkeypatch):
    """The same race with the write invalidating through post_save (a model save)."""
    from characters.models import Character
    from characters.services import character_save

    real = CHARACTER.loader
    raced = []

    def reader_then_writer(*, name):
        old = real(name=name)
        if not raced:
            raced.append(old)
            luna = Character.objects.get(name="luna")
            luna.greeting = "New greeting."
            character_save(character=luna)
        return old

    monkeypatch.setitem(CHARACTER.__dict__, "loader", reader_then_writer)
    assert alice.get("/api/characters/luna").json()["greeting"] == "Good evening."
    assert redis_raw.get("character:luna") is None
    assert alice.get("/api/characters/luna").json()["greeting"] == "New greeting."


def test_without_a_write_the_same_reader_does_store(user, alice, redis_raw, monkeypatch):
    """Control for the race tests: the wrapped loader by itself does not prevent the store."""

    real = USER_COINS.loader
    monkeypatch.setitem(USER_COINS.__dict__, "loader", lambda *, user_id: real(user_id=user_id))
    alice.get("/api/me/coins")
    assert json.loads(redis_raw.get(f"user:coins:{user.id}"))["data"] == {"balance": 30}


# --- leases ---------------------------------------------------------------------------------------


def test_a_miss_waits_for_the_lease_holder_instead_of_querying(user, redis_raw, monkeypatch):
    """Single flight: while another request holds the lease, a miss waits for its value, also when
    the holder takes longer than the old 0.5 s give-up point. The holder stores its value from
    inside the waiter's pause: no timer thread racing the waiter."""

    key = f"user:coins:{user.id}"
    loads = []
    monkeypatch.setitem(USER_COINS.__dict__, "loader", lambda *, user_id: loads.append(user_id) or {"balance": -1})
    redis_raw.set(f"lease:{key}", "someone-else", px=60_000)
    theirs = Payload.of({"balance": 30})
    waited = []

    def holder_finishes_after_a_while(delay):
        time.sleep(delay)
        waited.append(delay)
        if sum(waited) >= 0.6:  # a database slower than the old 0.5 s give-up point
            redis_raw.set(key, theirs.pack(), ex=60)

    monkeypatch.setattr(HOOKS, "lease_wait", holder_finishes_after_a_while)
    got = fetch(USER_COINS, user_id=user.id)
    assert got == theirs
    assert loads == []
    assert sum(waited) >= 0.6


def test_a_waiter_takes_over_the_lease_of_a_holder_that_died(user, redis_raw, monkeypatch):
    """The holder's process died: its lease expires and one waiter loads and stores the value."""

    key = f"user:coins:{user.id}"
    redis_raw.set(f"lease:{key}", "dead-process", px=60_000)
    loads = []
    real = USER_COINS.loader
    monkeypatch.setitem(USER_COINS.__dict__, "loader", lambda *, user_id: loads.append(user_id) or real(user_id=user_id))
    monkeypatch.setattr(HOOKS, "lease_wait", lambda delay: redis_raw.delete(f"lease:{key}"))  # it expires
    assert fetch(USER_COINS, user_id=user.id).data() == {"balance": 30}
    assert loads == [user.id]
    assert json.loads(redis_raw.get(key))["data"] == {"balance": 30}
    assert not redis_raw.exists(f"lease:{key}")


def test_a_waiter_that_gets_the_lease_just_after_the_holder_stored_does_not_query(user, redis_raw, monkeypatch):
    """The holder stores its value and drops its lease right after the waiter's last look: the
    waiter's SET NX then succeeds, and it must find that value rather than query again."""

    key = f"user:coins:{user.id}"
    redis_raw.set(f"lease:{key}", "holder", px=60_000)
    theirs = Payload.of({"balance": 30})
    loads = []
    monkeypatch.setitem(USER_COINS.__dict__, "loader", lambda *, user_id: loads.append(user_id) or {"balance": -1})

    def holder_finishes_right_after_this_look(target, found):
        if not loads and not found and redis_raw.exists(f"lease:{key}"):
            redis_raw.set(key, theirs.pack(), ex=60)
            redis_raw.delete(f"lease:{key}")

    monkeypatch.setattr(HOOKS, "lease_wait", lambda delay: None)
    monkeypatch.setattr(HOOKS, "lease_looked", holder_finishes_right_after_this_look)
    assert fetch(USER_COINS, user_id=user.id) == theirs
    assert loads == []
    assert not redis_raw.exists(f"lease:{key}")  # the waiter let go of the lease it took


def test_a_loading_request_keeps_its_lease_alive(user, redis_raw, monkeypatch, settings):
    """While the database is slow the holder's lease is extended, so waiters keep waiting for its
    value instead of taking over; once the load is done the lease is no longer extended."""

    key = f"user:coins:{user.id}"
    settings.CACHE_LEASE_TTL_MS = 60_000
    seen = {}
    real = USER_COINS.loader

    def slow(*, user_id):
        lease = f"lease:{key}"
        redis_raw.pexpire(lease, 50)  # about to lapse: the database is slower than the lease TTL
        LEASE_KEEPER.beat()  # what the keeper thread does every third of the TTL
        seen["pttl"] = redis_raw.pttl(lease)
        seen["held"] = LEASE_KEEPER.holds(lease)
        return real(user_id=user_id)

    monkeypatch.setitem(USER_COINS.__dict__, "loader", slow)
    assert fetch(USER_COINS, user_id=user.id).data() == {"balance": 30}
    assert seen["held"] and seen["pttl"] > 50_000
    assert not LEASE_KEEPER.holds(f"lease:{key}")
    assert json.loads(redis_raw.get(key))["data"] == {"balance": 30}


def test_the_keeper_never_extends_a_lease_someone_else_took(redis_raw):
    from core.cache.client import redis_client

    redis_raw.set("lease:user:coins:99", "theirs", px=100_000)
    LEASE_KEEPER.hold(redis_client(), "lease:user:coins:99", "mine")
    try:
        redis_raw.pexpire("lease:user:coins:99", 1000)
        LEASE_KEEPER.beat()
        assert redis_raw.pttl("lease:user:coins:99") <= 1000
    finally:
        LEASE_KEEPER.drop("lease:user:coins:99")


def test_a_failing_loader_releases_its_lease(user, redis_raw, monkeypatch):

    def broken(*, user_id):
        raise RuntimeError("database hiccup")

    monkeypatch.setitem(USER_COINS.__dict__, "loader", broken)
    with pytest.raises(RuntimeError):
        fetch(USER_COINS, user_id=user.id)
    assert not redis_raw.exists(f"lease:user:coins:{user.id}")
    assert not redis_raw.exists(f"user:coins:{user.id}")


def test_invalidate_deletes_key_and_lease(user, redis_raw):
    key = f"user:coins:{user.id}"
    redis_raw.set(key, Payload.of({"balance": 1}).pack(), ex=60)
    redis_raw.set(f"lease:{key}", "token", px=2000)
    invalidate((USER_COINS, {"user_id": user.id}))  # autocommit: at once
    assert not redis_raw.exists(key)
    assert not redis_raw.exists(f"lease:{key}")


# --- values ---------------------------------------------------------------------------------------


def test_payload_pack_is_plain_json_and_round_trips():
    payload = Payload.of({"balance": 5, "name": "Łuna ✓"})
    assert json.loads(payload.pack()) == {"etag": payload.etag, "data": {"balance": 5, "name": "Łuna ✓"}}
    assert Payload.unpack(payload.pack()) == payload


@pytest.mark.parametrize("raw", [
    b"garbage",
    b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.",  # a pickle
    b'{"etag":"short","data":1}',
    b'{"data":{"balance":999},"etag":"0123456789abcdef"}',  # other field order
    b"",
])
def test_an_unreadable_value_is_a_miss_and_gets_replaced(raw, user, alice, redis_raw):
    key = f"user:coins:{user.id}"
    redis_raw.set(key, raw, ex=60)
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert json.loads(redis_raw.get(key))["data"] == {"balance": 30}


# --- the deploy-wide namespace ---------------------------------------------------------------------


@pytest.fixture
def namespaced(settings):
    settings.CACHE_NAMESPACE = "ns1:"
    return "ns1:"


def test_namespace_prefix_stands_in_front_of_every_key(namespaced, user, alice, characters, redis_raw):
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/characters").status_code == 200
    keys = {k.decode() for k in redis_raw.scan_iter()}
    assert keys == {f"ns1:user:coins:{user.id}", "ns1:user:email:alice@example.com", "ns1:characters:list"}
    assert [k.decode() for k in redis_raw.scan_iter(match="ns1:user:coins:*")] == [f"ns1:user:coins:{user.id}"]

    coins_apply(user_id=user.id, amount=5, reason=CoinLedgerEntry.Reason.GRANT)
    assert not redis_raw.exists(f"ns1:user:coins:{user.id}")  # invalidation uses the namespace too
    assert alice.get("/api/me/coins").json() == {"balance": 35}


def test_namespaced_deploys_do_not_see_each_others_keys(namespaced, user, alice, redis_raw):
    # Another deploy (no namespace) left a wrong value under the bare key: ours ignores it.
    redis_raw.set(f"user:coins:{user.id}", Payload.of({"balance": 999}).pack(), ex=60)
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert json.loads(redis_raw.get(f"user:coins:{user.id}"))["data"] == {"balance": 999}


def test_a_read_inside_a_rolled_back_transaction_stores_nothing(user, alice, redis_raw):
    """The reader sees its own transaction's uncommitted write; stored, the rollback would leave a
    balance in Redis that never existed."""
    from django.db import transaction

    from accounts.models import CoinLedgerEntry
    from accounts.selectors import user_coins_cached
    from accounts.services import coins_apply

    alice.get("/api/me")  # the process has synced with Redis
    with pytest.raises(RuntimeError), transaction.atomic():
        coins_apply(user_id=user.id, amount=-5, reason=CoinLedgerEntry.Reason.SPEND)
        assert user_coins_cached(user_id=user.id).data() == {"balance": 25}  # its own write, uncommitted
        raise RuntimeError("rolled back")
    assert redis_raw.get(f"user:coins:{user.id}") is None
    assert not redis_raw.exists(f"lease:user:coins:{user.id}")
    assert alice.get("/api/me/coins").json() == {"balance": 30}


# --- the benchmark baselines' switch ----------------------------------------------------------------


def test_with_the_layer_off_reads_come_from_the_database_and_nothing_touches_redis(user, alice, redis_raw, settings):
    """CACHE_LAYER_ENABLED=False (bench: no cache, cachalot): every read is a fresh load, no key,
    no lease, and invalidation is a no-op instead of a Redis call."""
    from accounts.models import User

    settings.CACHE_LAYER_ENABLED = False
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    User.objects.filter(pk=user.id).update(coin_balance=7)  # no signal, no invalidation
    assert alice.get("/api/me/coins").json() == {"balance": 7}
    invalidate((USER_COINS, {"user_id": user.id}))
    assert redis_raw.dbsize() == 0
