"""Pending invalidations per node on a real Redis Cluster (3 primaries + 3 replicas on loopback): a
node's sync reads only the rows of the slots it serves, a node that refuses deletes leaves the
healthy nodes alone (no sync, no query), and after a failover the demoted node's breaker gauge
agrees with /api/health."""

from __future__ import annotations

import time

import pytest

from core.cache.hooks import HOOKS
from core.models import PendingInvalidation
from tests.support.harness import until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rows_read(monkeypatch) -> dict[str, list[str]]:
    """The pending rows each node's sync read, by node."""
    read: dict[str, list[str]] = {}
    monkeypatch.setattr(HOOKS, "pending_rows_read", lambda node, keys: read.setdefault(node, []).extend(keys))
    return read


def node_name(server) -> str:
    return f"127.0.0.1:{server.port}"


def test_each_nodes_sync_reads_only_the_rows_of_its_slots(revived, cluster_cache, api, rows_read):
    from core.cache import pending

    keys = [f"user:coins:{{{n}}}" for n in range(1, 31)]
    by_node: dict[str, set[str]] = {}
    for key in keys:
        by_node.setdefault(node_name(cluster_cache.primary_for(key)), set()).add(key)
    assert len(by_node) == 3
    for key in keys:
        cluster_cache.primary_for(key).client().set(key, b"old")
    pending.record_pending_invalidations(keys)  # another host's deletes failed

    # /api/health syncs every node it meets (each drains its own pending deletes first).
    assert api.get("/api/health").json()["cache"]["status"] == "up"

    assert {node: set(read) for node, read in rows_read.items()} == by_node
    assert all(len(read) == len(set(read)) for read in rows_read.values())  # each row read once
    assert not PendingInvalidation.objects.exists()
    assert not any(cluster_cache.primary_for(key).client().exists(key) for key in keys)


def test_a_node_that_refuses_deletes_leaves_the_other_nodes_untouched(
    revived, cluster_cache, make_user, client_for, settings, rows_read, django_assert_num_queries
):
    from accounts.models import CoinLedgerEntry, User
    from accounts.services import coins_apply
    from core.cache.watch import watcher

    settings.CACHE_INVALIDATION_REPLICAS = 1
    settings.CACHE_INVALIDATION_WAIT_MS = 200
    settings.CACHE_PENDING_WATCH = True
    settings.CACHE_PENDING_RETRY = 0.2
    settings.CACHE_PENDING_CHECK = 0.2
    settings.CACHE_BREAKER_COOLDOWN = 0.2
    alice = make_user("alice@example.com", coins=30)
    refusing = cluster_cache.primary_for(f"user:coins:{{{alice.id}}}")
    others = []
    for n in range(20):  # users whose keys live on the two other nodes
        user = make_user(f"user{n}@example.com", coins=50)
        if cluster_cache.primary_for(f"user:coins:{{{user.id}}}").port != refusing.port:
            others.append(user)
    assert {cluster_cache.primary_for(f"user:coins:{{{u.id}}}").port for u in others} == \
        {s.port for s in cluster_cache.primaries()} - {refusing.port}
    readers = [client_for(user) for user in others]
    here_alice = client_for(alice)
    try:
        for _ in range(2):
            assert here_alice.get("/api/me/coins").json() == {"balance": 30}
            for reader in readers:
                assert reader.get("/api/me/coins").json() == {"balance": 50}
        refusing.client().config_set("min-replicas-to-write", 2)  # one replica: NOREPLICAS

        coins_apply(user_id=alice.id, amount=-5, reason=CoinLedgerEntry.Reason.SPEND, reference="test")
        assert PendingInvalidation.objects.filter(key=f"user:coins:{{{alice.id}}}").exists()
        User.objects.filter(pk__in=[u.id for u in others]).update(coin_balance=999)  # no invalidation

        for _ in range(10):  # the watcher retries the refusing node meanwhile
            assert here_alice.get("/api/me/coins").json() == {"balance": 25}
            with django_assert_num_queries(0):
                for reader in readers:  # served from Redis: the old balance, no query
                    assert reader.get("/api/me/coins").json() == {"balance": 50}
            time.sleep(0.1)
        assert set(rows_read) <= {node_name(refusing)}  # no other node drained (or synced) anything
    finally:
        refusing.client().config_set("min-replicas-to-write", 0)
    until(lambda: not PendingInvalidation.objects.exists(), "the pending delete was never applied")
    watcher().stop()
    assert set(rows_read) == {node_name(refusing)}
    assert here_alice.get("/api/me/coins").json() == {"balance": 25}
    with django_assert_num_queries(0):
        assert here_alice.get("/api/me/coins").json() == {"balance": 25}  # trusted again


def breaker_gauges(client) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200
    return {sample.labels["node"]: sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples if sample.name == "cache_breaker_open"}


def test_after_a_planned_failover_the_demoted_node_shows_no_open_breaker(
    revived, cluster_cache, api, client, alice, user, settings
):
    """The old primary lives on as a replica and answers MOVED to a delete no read preceded: the
    delete is recorded and replayed on the new primary; /api/health says up, and the gauge agrees."""
    from core.cache.api import invalidate
    from core.cache.registry import FAMILIES

    settings.CACHE_BREAKER_COOLDOWN = 0.2
    key = f"subscription:stats:{{{user.id}}}"
    assert alice.get("/api/subscription/stats").status_code == 200
    primary = cluster_cache.primary_for(key)
    replica = cluster_cache.replica_of(primary)
    replica.client().execute_command("CLUSTER", "FAILOVER")
    until(lambda: replica.client().info("replication")["role"] == "master"
          and primary.client().info("replication")["role"] == "slave", "the planned failover never happened")
    cluster_cache.wait_ok()

    invalidate((FAMILIES["subscription:stats"], {"user_id": user.id}))  # MOVED from the demoted node
    health = api.get("/api/health").json()
    assert health["status"] == "ok" and health["cache"]["status"] == "up"
    assert node_name(primary) not in health["cache"]["nodes"]
    assert breaker_gauges(client).get(node_name(primary), 0) == 0
    until(lambda: alice.get("/api/subscription/stats").status_code == 200
          and not PendingInvalidation.objects.exists(), "the recorded delete was never replayed")
    assert breaker_gauges(client).get(node_name(primary), 0) == 0
