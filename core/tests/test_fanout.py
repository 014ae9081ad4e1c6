"""Fan-outs: a plan edit (every subscriber's subscription and stats) and a character rename (every
chat session under the old name) cost the same Redis commands and SQL statements whatever the
number of keys they cover, record one pending invalidation when Redis is down, and no reader sees
a value from before the write afterwards, on one Redis, after a restart from the AOF, and in a
Redis Cluster."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from core.cache.api import fetch, warm
from core.models import PendingInvalidation
from tests.support.harness import cache_on_own_redis

pytestmark = pytest.mark.django_db(transaction=True)

# What a connection says when it opens (redis-py's handshake, the breaker's INFO) and what the
# test itself sends: not what the write costs.
_NOT_THE_WRITE = {"info", "config|resetstat", "client|setinfo", "hello", "ping", "select", "client|setname"}


def redis_commands(client) -> int:
    """Commands Redis ran since the last ``CONFIG RESETSTAT``, the write's own only."""
    stats = client.info("commandstats")
    return sum(entry["calls"] for name, entry in stats.items() if name.removeprefix("cmdstat_") not in _NOT_THE_WRITE)


def subscribers(plan, count: int, *, start: int = 0) -> list[int]:
    """``count`` users subscribed to ``plan``, made in bulk: their ids."""
    from accounts.models import User
    from subscriptions.models import Subscription

    users = User.objects.bulk_create([User(email=f"sub{start + n}@example.com", password="!") for n in range(count)])
    now = timezone.now()
    Subscription.objects.bulk_create([Subscription(user=user, plan=plan, current_period_start=now,
                                                   current_period_end=now + timedelta(days=30)) for user in users])
    return [user.id for user in users]


def cache_subscriptions(user_ids: list[int]) -> None:
    from subscriptions.cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER

    warm([(family, {"user_id": user_id}) for user_id in user_ids for family in (SUBSCRIPTION_USER, SUBSCRIPTION_STATS)])


def edit_plan(plan, **changes) -> None:
    """As the admin saves a plan: in one transaction, invalidations after commit."""
    for name, value in changes.items():
        setattr(plan, name, value)
    with transaction.atomic():
        plan.save()


def assert_every_subscriber_reads(user_ids: list[int], *, name: str, daily_generation_limit: int) -> None:
    from subscriptions.cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER

    for user_id in user_ids:
        assert fetch(SUBSCRIPTION_USER, user_id=user_id).data()["plan"]["name"] == name, user_id
        stats = fetch(SUBSCRIPTION_STATS, user_id=user_id).data()
        assert stats["generations"]["daily_limit"] == daily_generation_limit, user_id


def test_a_plan_edit_costs_the_same_for_10_and_1000_subscribers(plans, redis_raw, sql_statements):
    plan = plans["plus"]
    costs = []
    users: list[int] = []
    for count, name in ((10, "Plus Ten"), (990, "Plus Thousand")):
        users += subscribers(plan, count, start=len(users))
        cache_subscriptions(users)
        assert_every_subscriber_reads(users, name=plan.name, daily_generation_limit=plan.daily_generation_limit)
        redis_raw.config_resetstat()
        with sql_statements() as run:
            edit_plan(plan, name=name, daily_generation_limit=len(users))
        costs.append((redis_commands(redis_raw), len(run)))
        assert_every_subscriber_reads(users, name=name, daily_generation_limit=len(users))
    (commands_10, sql_10), (commands_1000, sql_1000) = costs
    assert commands_10 == commands_1000 <= 2, costs
    assert sql_10 == sql_1000, costs


def test_after_a_plan_edit_warm_fills_again_and_verify_finds_no_drift(plans, redis_raw):
    from core.cache.api import Payload
    from core.cache.ops.verify import verify
    from subscriptions.cache import SUBSCRIPTION_USER

    plan = plans["plus"]
    users = subscribers(plan, 5)
    cache_subscriptions(users)
    edit_plan(plan, name="Plus Edited", daily_generation_limit=9)
    # The values built under the old version are still there, never served: verify does not count
    # them as drift, and a warm-up fills them again rather than taking them for cached.
    assert redis_raw.exists(f"subscription:user:{users[0]}")
    assert verify().drifted == []
    result = warm([(SUBSCRIPTION_USER, {"user_id": user_id}) for user_id in users])
    assert result.written == {"subscription:user": 5} and result.already == {}
    version = redis_raw.get("plans:version")
    for user_id in users:
        payload = Payload.unpack(redis_raw.get(f"subscription:user:{user_id}"))
        assert payload.stamp == version and payload.data()["plan"]["name"] == "Plus Edited"
    assert warm([(SUBSCRIPTION_USER, {"user_id": users[0]})]).already == {"subscription:user": 1}


# The stale-set race across a fan-out: a reader misses, loads the OLD plan, and before it stores
# that value the plan edit commits and deletes the version key (the writer runs inside the wrapped
# loader, autocommit: its after-commit delete runs at once). The value it stores is stamped with
# the version it read before loading, which is gone: never served.


@pytest.mark.parametrize("version_missing", [False, True], ids=["version-known", "version-started-by-the-fill"])
def test_a_plan_edit_during_a_load_is_never_hidden_by_it(plans, redis_raw, monkeypatch, version_missing):
    from subscriptions.cache import SUBSCRIPTION_USER

    plan = plans["plus"]
    (user_id,) = subscribers(plan, 1)
    other = subscribers(plan, 1, start=1)[0]
    fetch(SUBSCRIPTION_USER, user_id=other)  # the plans' version exists
    if version_missing:
        redis_raw.delete("plans:version")
    real = SUBSCRIPTION_USER.loader
    raced = []

    def reader_then_writer(*, user_id):
        old = real(user_id=user_id)
        if not raced:
            raced.append(old["plan"]["name"])
            plan.name = "Plus Raced"
            plan.save()  # commits, deletes the version key
        return old

    monkeypatch.setitem(SUBSCRIPTION_USER.__dict__, "loader", reader_then_writer)
    assert fetch(SUBSCRIPTION_USER, user_id=user_id).data()["plan"]["name"] == "Plus"  # what it read...
    assert raced == ["Plus"]
    assert redis_raw.exists(f"subscription:user:{user_id}")  # ...stored, under a version that is gone
    monkeypatch.setitem(SUBSCRIPTION_USER.__dict__, "loader", real)
    assert fetch(SUBSCRIPTION_USER, user_id=user_id).data()["plan"]["name"] == "Plus Raced"
    assert fetch(SUBSCRIPTION_USER, user_id=other).data()["plan"]["name"] == "Plus Raced"


@pytest.fixture
def faulty(settings):
    """A Redis of this test's own, with an AOF, that the test may kill and start again."""
    settings.CACHE_BREAKER_COOLDOWN = 0.3
    settings.CACHE_PENDING_RETRY = 60  # recovery through reads, not the background retry
    with cache_on_own_redis(settings, "--appendonly", "yes", "--appendfsync", "always") as server:
        yield server


def wait_out_cooldown() -> None:
    time.sleep(0.35)


@pytest.mark.slow
def test_a_plan_edit_while_redis_is_down_records_one_row_and_no_stale_read_after(faulty, plans):
    plan = plans["plus"]
    users = subscribers(plan, 60)
    cache_subscriptions(users)
    assert_every_subscriber_reads(users, name="Plus", daily_generation_limit=plan.daily_generation_limit)
    version = faulty.client().get("plans:version")

    faulty.stop()  # SIGKILL: the AOF keeps every cached subscription and the plans' version
    edit_plan(plan, name="Plus Down", daily_generation_limit=3)
    assert list(PendingInvalidation.objects.values_list("key", flat=True)) == ["plans:version"]

    faulty.start()
    assert faulty.client().get("plans:version") == version  # the old version is back from the AOF
    assert_every_subscriber_reads(users, name="Plus Down", daily_generation_limit=3)  # the database, breaker open
    wait_out_cooldown()
    assert_every_subscriber_reads(users, name="Plus Down", daily_generation_limit=3)  # synced first
    assert not PendingInvalidation.objects.exists()
    assert faulty.client().get("plans:version") != version


def test_a_plan_edit_whose_version_delete_is_refused_bypasses_only_the_values_under_it(
        faulty, plans, redis_raw, sql_statements, characters):
    """Redis refuses the version key's delete (NOREPLICAS): nothing changes in Redis, the version
    key is pending, and every value stamped with it must be read from the database until the
    delete is applied. Keys under no version (the characters) keep being served from Redis."""
    from characters.cache import CHARACTERS_LIST

    plan = plans["plus"]
    users = subscribers(plan, 5)
    cache_subscriptions(users)
    fetch(CHARACTERS_LIST)  # cached
    faulty.client().config_set("min-replicas-to-write", 1)
    try:
        edit_plan(plan, name="Plus Refused", daily_generation_limit=4)
        assert list(PendingInvalidation.objects.values_list("key", flat=True)) == ["plans:version"]
        assert faulty.client().exists("plans:version")  # the delete never happened in Redis
        assert_every_subscriber_reads(users, name="Plus Refused", daily_generation_limit=4)
        with sql_statements() as run:
            fetch(CHARACTERS_LIST)
        assert run == []
    finally:
        faulty.client().config_set("min-replicas-to-write", 0)


# --- renames ---------------------------------------------------------------------------------------


def sessions(user, character, count: int) -> list[str]:
    """``count`` chat sessions of ``user`` with ``character``, one message each, made in bulk."""
    from chat.models import ChatMessage, ChatSession

    made = ChatSession.objects.bulk_create([ChatSession(user=user, character=character, session_id=f"s{n}", last_seq=1)
                                            for n in range(count)])
    ChatMessage.objects.bulk_create([ChatMessage(session=chat, user=user, seq=1, role="user", content=f"hi {chat.session_id}")
                                     for chat in made])
    return [chat.session_id for chat in made]


def cache_histories(user, name: str, session_ids: list[str]) -> None:
    from chat.cache import CHAT_HISTORY

    warm([(CHAT_HISTORY, {"user_id": user.id, "character": name, "session": sid}) for sid in session_ids])
    for sid in session_ids[:3]:
        assert fetch(CHAT_HISTORY, user_id=user.id, character=name, session=sid).data()["messages"][0]["content"] == f"hi {sid}"


def rename(character, new_name: str) -> None:
    character.name = new_name
    with transaction.atomic():
        character.save()


def assert_no_history_under(user, name: str, session_ids: list[str]) -> None:
    """Every session id under this name reads as unknown (the name's new holder has none)."""
    from chat.cache import CHAT_HISTORY
    from chat.models import ChatSession

    for sid in session_ids:
        with pytest.raises(ChatSession.DoesNotExist):
            fetch(CHAT_HISTORY, user_id=user.id, character=name, session=sid)


def test_a_rename_costs_the_same_for_5_and_600_sessions_and_old_pages_never_return(
        user, characters, redis_raw, sql_statements):
    from characters.models import Character
    from chat.cache import CHAT_HISTORY

    costs = []
    for count, name in ((5, "luna"), (600, "rex")):
        character = characters[name]
        made = sessions(user, character, count)
        cache_histories(user, name, made)
        redis_raw.config_resetstat()
        with sql_statements() as run:
            rename(character, f"{name}-renamed")
        costs.append((redis_commands(redis_raw), len([q for q in run if "chat_" in q])))
        # A new character takes the old name: none of the renamed one's pages show under it.
        Character.objects.create(name=name, display_name=name.title())
        assert_no_history_under(user, name, made)
        renamed = fetch(CHAT_HISTORY, user_id=user.id, character=f"{name}-renamed", session=made[-1])
        assert renamed.data()["messages"][0]["content"] == f"hi {made[-1]}"
    (commands_5, chat_sql_5), (commands_600, chat_sql_600) = costs
    assert commands_5 == commands_600, costs
    assert chat_sql_5 == chat_sql_600 == 0, costs  # no session is looked up for the rename


@pytest.mark.slow
def test_a_rename_while_redis_is_down_records_one_row_and_no_stale_read_after(faulty, user, characters):
    from characters.models import Character

    made = sessions(user, characters["luna"], 40)
    cache_histories(user, "luna", made)
    faulty.stop()
    rename(characters["luna"], "selene")
    assert set(PendingInvalidation.objects.values_list("key", flat=True)) == {"chat:version:luna", "character:luna",
                                                                            "character:selene", "characters:list"}
    Character.objects.create(name="luna", display_name="Another Luna")
    faulty.start()  # the renamed character's pages come back from the AOF under the old name
    assert_no_history_under(user, "luna", made)
    wait_out_cooldown()
    assert_no_history_under(user, "luna", made)
    assert not PendingInvalidation.objects.exists()


# --- Redis Cluster ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_plan_edit_and_rename_in_a_cluster(cluster_cache, plans, user, alice, characters, sql_statements):
    from chat.cache import CHAT_HISTORY

    users = [user.id, *subscribers(plans["free"], 20)]
    cache_subscriptions(users)
    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hello"}, format="json").status_code == 202
    assert alice.get("/api/chat/luna/sessions/s1/messages").status_code == 200
    with sql_statements() as warm_reads:  # cached reads in a cluster: the version rides along, no SQL
        assert alice.get("/api/subscription").json()["plan"]["name"] == "Free"
        assert alice.get("/api/subscription/stats").status_code == 200
        assert alice.get("/api/chat/luna/sessions/s1/messages").status_code == 200
    assert all("core_pendinginvalidation" in q for q in warm_reads), warm_reads
    assert cluster_cache.get("{plans:version}") is not None and cluster_cache.get("chat:version:{luna}") is not None

    edit_plan(plans["free"], name="Free Cluster", daily_generation_limit=4)
    assert cluster_cache.get("{plans:version}") is None
    assert_every_subscriber_reads(users, name="Free Cluster", daily_generation_limit=4)
    assert alice.get("/api/subscription").json()["plan"]["name"] == "Free Cluster"

    rename(characters["luna"], "selene")
    assert cluster_cache.get("chat:version:{luna}") is None
    from characters.models import Character

    Character.objects.create(name="luna", display_name="Another Luna")
    assert alice.get("/api/chat/luna/sessions/s1/messages").status_code == 404
    assert fetch(CHAT_HISTORY, user_id=user.id, character="selene", session="s1").data()["messages"][0]["content"] == "hello"
    assert not PendingInvalidation.objects.exists()
