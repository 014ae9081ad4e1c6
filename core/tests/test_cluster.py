"""Cluster mode (core/cache/cluster.py) on a real Redis Cluster on loopback: 3 primaries and 3
replicas started once for this module. The cached endpoints, invalidation after writes, a primary
killed under load, and the ops commands."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# url -> the key in cluster form ({uid}: alice's id)
ENDPOINTS = {
    "/api/me": "user:email:{{{uid}}}:alice@example.com",
    "/api/me/coins": "user:coins:{{{uid}}}",
    "/api/subscription": "subscription:user:{{{uid}}}",
    "/api/subscription/stats": "subscription:stats:{{{uid}}}",
    "/api/characters": "{{characters:list}}",
    "/api/characters/luna": "character:{{luna}}",
    "/api/generation/settings": "{{generation:settings}}",
    "/api/chat/luna/sessions/s1/messages": "chat:history:{{{uid}}}:luna:s1",
}


@pytest.fixture
def world(user, alice, characters, cluster_cache):
    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hello"}, format="json").status_code == 202
    cluster_cache.wipe()
    return alice


def cached_data(cluster, key: str):
    raw = cluster.get(key)
    return None if raw is None else json.loads(raw)["data"]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_endpoint_fills_its_tagged_key_and_warm_hits_cost_no_sql(url, world, user, cluster_cache):
    key = ENDPOINTS[url].format(uid=user.id)
    first = world.get(url)
    assert first.status_code == 200, first.content
    assert cached_data(cluster_cache, key) == first.json()
    for _ in range(3):
        with CaptureQueriesContext(connection) as run:
            again = world.get(url)
        assert again.status_code == 200
        assert again.content == first.content
        # Right after the cluster forms (about one run in ten) the client may refresh its topology
        # or open a node connection; that node is synced before it is trusted: one read of the
        # pending deletes. A warm hit never reads its data from PostgreSQL.
        assert all("core_pendinginvalidation" in q["sql"] for q in run.captured_queries), run.captured_queries
        if not run.captured_queries:
            break
    else:
        pytest.fail("no warm hit ran without SQL in three tries")


def test_only_tagged_contract_keys_remain(world, user, cluster_cache):
    for url in ENDPOINTS:
        assert world.get(url).status_code == 200
    versions = {"{plans:version}", "chat:version:{luna}"}  # what the versioned values count under
    assert cluster_cache.keys() == {key.format(uid=user.id) for key in ENDPOINTS.values()} | versions


@pytest.mark.parametrize(("url", "slots"), [("/api/me/coins", 1), ("/api/chat/luna/sessions/s1/messages", 2),
                                           ("/api/subscription", 2)])
def test_a_warm_read_is_one_round_trip_per_slot(world, cluster_cache, url, slots):
    """The user's keys share a slot: one MGET; the chat page also reads character:{luna} (and
    chat:version:{luna}, in the same slot): two; the subscription also {plans:version}: two."""
    world.get(url)
    clients = [server.client() for server in cluster_cache.primaries()]
    for client in clients:
        client.config_resetstat()
    assert world.get(url).status_code == 200
    calls: dict[str, int] = {}
    for client in clients:
        for name, value in client.info("commandstats").items():
            name = name.removeprefix("cmdstat_")
            if name not in ("config|resetstat", "info", "hello", "replconf", "ping", "cluster|nodes"):
                calls[name] = calls.get(name, 0) + value["calls"]
    assert calls == {"mget": slots}, calls


def test_writes_amend_on_the_cluster(world, user, cluster_cache):
    """A user's keys share a slot, so a write amends them as on one Redis: each key holds what its
    loader gives after the commit (the chat page appended inside Redis), none is left deleted."""
    from accounts.cache import USER_COINS
    from chat.cache import CHAT_HISTORY
    from core.cache.api import Payload
    from subscriptions.cache import SUBSCRIPTION_STATS

    coins = f"user:coins:{{{user.id}}}"
    stats = f"subscription:stats:{{{user.id}}}"
    history = f"chat:history:{{{user.id}}}:luna:s1"
    for url in ("/api/me/coins", "/api/subscription/stats", "/api/chat/luna/sessions/s1/messages"):
        world.get(url)
    assert cached_data(cluster_cache, coins) is not None
    assert world.post("/api/generations", {"prompt": "a cat"}, format="json").status_code == 202
    assert cached_data(cluster_cache, coins) == USER_COINS.load(user_id=user.id)
    assert cached_data(cluster_cache, stats) == SUBSCRIPTION_STATS.load(user_id=user.id)
    for text in ("again", "and again"):
        assert world.post("/api/chat/luna/sessions/s1/messages", {"content": text}, format="json").status_code == 202
        assert cluster_cache.get(history) == Payload.of(
            CHAT_HISTORY.load(user_id=user.id, character="luna", session="s1"),
            stamp=cluster_cache.get("chat:version:{luna}")).pack()
    assert cached_data(cluster_cache, stats) == SUBSCRIPTION_STATS.load(user_id=user.id)
    assert not [key for key in cluster_cache.keys() if key.startswith("lease:")]
    balance = world.get("/api/me/coins").json()["balance"]
    user.refresh_from_db()
    assert balance == user.coin_balance


def test_django_default_cache_works_on_the_cluster(cluster_cache):
    from django.core.cache import cache

    cache.set_many({"a": 1, "b": 2, "c": 3})
    assert cache.get_many(["a", "b", "c", "missing"]) == {"a": 1, "b": 2, "c": 3}
    assert cache.incr("a") == 2
    cache.delete_many(["a", "b"])
    assert cache.get("a") is None and cache.get("c") == 3
    cache.set("d", 4)
    assert sorted(cache.keys("*")) == sorted(cache.iter_keys("*")) == ["c", "d"]  # SCAN on every primary
    cache.clear()
    assert cache.get("c") is None and cache.keys("*") == []


def nodes_of(caches: dict, nodes: list[str]) -> dict:
    """CACHES with the cluster's seed nodes replaced."""
    from core.cache.topology import cluster_options

    default = caches["default"]
    return {**caches, "default": {**default, "OPTIONS": cluster_options(default["OPTIONS"], nodes=nodes)}}


def test_every_client_error_degrades_to_the_database(world, settings, cluster_cache):
    """No node of the configured list answers (RedisClusterException, not a RedisError): 200s."""
    from core.cache.cluster import reset_node_healths
    from tests.support.harness import free_port

    settings.CACHES = nodes_of(settings.CACHES, [f"127.0.0.1:{free_port()}"])
    reset_node_healths()
    for url in ENDPOINTS:
        assert world.get(url).status_code == 200, url
    assert world.post("/api/generations", {"prompt": "a cat"}, format="json").status_code == 202


def test_a_bad_node_list_degrades_to_the_database(world, settings, cluster_cache):
    settings.CACHES = nodes_of(settings.CACHES, ["127.0.0.1:notaport"])
    for url in ENDPOINTS:
        assert world.get(url).status_code == 200, url


# --- ops -----------------------------------------------------------------------------------------


def test_warm_fills_per_user_keys_in_batches_per_primary(world, user, cluster_cache, make_user, monkeypatch):
    """In cluster mode too the per-user families go through their bulk loaders, a batch per
    primary, not fetch key by key; the values are the ones a read would store."""
    from core.cache.ops import warm as warm_ops
    from core.cache.registry import FAMILIES

    others = [make_user(f"w{i}@example.com", coins=3) for i in range(12)]
    cluster_cache.wipe()
    loaded_one_by_one: list[str] = []  # fetch's way: the family's loader, one key at a time

    def observed(family):
        load = family.loader
        return lambda **parts: loaded_one_by_one.append(family.name) or load(**parts)

    for family in FAMILIES.values():
        monkeypatch.setitem(family.__dict__, "loader", observed(family))
    result = warm_ops.warm(warm_ops.warm_targets(FAMILIES.values()))
    bulk = {name for name, family in FAMILIES.items() if family.bulk_loader is not None}
    assert bulk and not bulk & set(loaded_one_by_one)
    assert loaded_one_by_one  # the shared families (no bulk loader) went through it: it is observed
    for other in others:
        assert json.loads(cluster_cache.get(f"user:coins:{{{other.id}}}"))["data"] == {"balance": 3}
        assert cluster_cache.get(f"subscription:user:{{{other.id}}}") is not None
    assert result.written["user:coins"] == len(others) + 1
    holders = [s for s in cluster_cache.primaries() if any(k.startswith(b"user:coins:") for k in s.client().scan_iter())]
    assert len(holders) > 1  # the batches really went to more than one primary
    assert not [k for k in cluster_cache.keys() if k.startswith("lease:")]
    assert warm_ops.warm(warm_ops.warm_targets(FAMILIES.values())).total_written == 0


def test_ops_commands_cover_every_primary(world, user, cluster_cache, make_user):
    from django.core.management import call_command

    from core.cache.ops.flush import flush
    from core.cache.ops.stats import stats
    from core.cache.ops.verify import verify
    from core.cache.ops.warm import warm, warm_targets
    from core.cache.registry import FAMILIES

    others = [make_user(f"u{i}@example.com") for i in range(12)]
    for url in ENDPOINTS:
        world.get(url)
    result = warm(warm_targets(FAMILIES.values(), users_active_since=30))
    assert result.total_written > 0
    user_ids = {u.id for u in [user, *others]}
    cluster_users = {int(k.split("{")[1].split("}")[0]) for k in cluster_cache.keys() if k.startswith("user:coins:")}
    assert cluster_users <= user_ids and len(cluster_users) > 1
    # The per-user keys spread over more than one primary.
    holders = [s for s in cluster_cache.primaries() if any(k.startswith(b"user:coins:") for k in s.client().scan_iter())]
    assert len(holders) > 1

    report = stats(sample=50)
    assert report["families"]["user:coins"]["keys"] == len(cluster_users)
    assert len(report["nodes"]) == 3
    assert report["redis"]["db_keys"] == sum(n["db_keys"] for n in report["nodes"].values()) == len(cluster_cache.keys())

    # Drift on one key is found and fixed.
    stale = f"user:coins:{{{others[0].id}}}"
    cluster = redis.RedisCluster(host="127.0.0.1", port=cluster_cache.primaries()[0].port)
    cluster.set(stale, b'{"etag":"0000000000000000","data":{"balance":-1}}')
    cluster.close()
    checked = verify(fix=True)
    assert [d.key for d in checked.drifted] == [stale]
    assert sum(checked.checked.values()) > len(cluster_users)
    assert cluster_cache.get(stale) is None

    counts = flush(FAMILIES.values())
    assert sum(counts.values()) > 0
    assert cluster_cache.keys() == set()
    call_command("cache_stats")  # the command prints per node and totals without error


# --- failover ------------------------------------------------------------------------------------


def test_a_primary_killed_under_load_gives_no_5xx_and_no_stale_value(world, user, cluster_cache, client_for,
                                                                    make_user):
    from accounts.models import User
    from core.cache.ops.verify import verify

    users = [user, *(make_user(f"load{i}@example.com", coins=50) for i in range(5))]
    clients = [client_for(u) for u in users]
    urls = ["/api/me", "/api/me/coins", "/api/subscription/stats", "/api/characters", "/api/characters/luna"]
    statuses: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def load(i: int) -> None:
        client = clients[i % len(clients)]
        n = 0
        try:
            while not stop.is_set():
                n += 1
                if n % 5 == 0:
                    statuses.append(client.post("/api/generations", {"prompt": "x"}, format="json").status_code)
                else:
                    statuses.append(client.get(urls[n % len(urls)]).status_code)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    victim = cluster_cache.primaries()[0]
    victim.stop()  # kill -9 of a primary this test started
    cluster_cache.wait_ok()  # its replica took over
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert statuses and all(status < 500 for status in statuses), sorted(set(statuses))
    assert statuses.count(200) + statuses.count(201) + statuses.count(202) > 50

    # Quiescence: every value the cluster holds is what the database says, and reads still work.
    time.sleep(1.0)
    for client in clients:
        for url in urls:
            assert client.get(url).status_code == 200
    result = verify()
    assert result.drifted == [], result.drifted
    for u in users:
        balance = clients[users.index(u)].get("/api/me/coins").json()["balance"]
        assert balance == User.objects.get(pk=u.id).coin_balance
    with CaptureQueriesContext(connection) as queries:
        clients[0].get("/api/characters")
    assert len(queries) == 0


def test_an_amendment_over_many_slots_deletes_key_by_key(world, user, cluster_cache, make_user):
    """Keys of several users (several slots, some on one node) that cannot be amended are deleted
    one DEL per slot: nothing is left pending, and the one cached key is amended."""
    from django.db import transaction

    from accounts.cache import USER_COINS, coins_set_to, coins_target
    from core.cache.api import amend_after_commit, invalidate
    from core.models import PendingInvalidation

    others = [make_user(f"u{i}@example.com") for i in range(5)]
    world.get("/api/me/coins")
    targets = [coins_target(user_id=someone.id) for someone in (user, *others)]
    with amend_after_commit(*targets) as (mine, *_):
        with transaction.atomic():
            invalidate(*targets)
        mine.change(coins_set_to(USER_COINS.load(user_id=user.id)["balance"]))
    assert not PendingInvalidation.objects.exists()
    assert cached_data(cluster_cache, f"user:coins:{{{user.id}}}") == USER_COINS.load(user_id=user.id)
