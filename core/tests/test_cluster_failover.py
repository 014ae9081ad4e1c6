"""Cluster failover on a real Redis Cluster on loopback (3 primaries + 3 replicas, this module's
own): a delete the dying primary took but never replicated, a killed node rejoining, and
/api/health while one node is dead. CACHE_INVALIDATION_REPLICAS=1 throughout: each delete is
followed by WAIT on the key's node (core/cache/cluster.py unlink_on_node)."""

from __future__ import annotations

import copy
import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.models import PendingInvalidation
from tests.support.harness import until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def replicated(revived, cluster_cache, settings):
    settings.CACHE_INVALIDATION_REPLICAS = 1
    settings.CACHE_INVALIDATION_WAIT_MS = 200  # below REDIS_SOCKET_TIMEOUT (0.25 s); room for a loaded CI machine
    settings.CACHE_BREAKER_COOLDOWN = 0.2
    return cluster_cache


def raw_get(server, key: str) -> bytes | None:
    """The key's value on this node, replica or primary (READONLY lets a replica answer)."""
    client = server.client(single_connection_client=True)
    try:
        if client.info("replication")["role"] == "slave":
            client.execute_command("READONLY")
        return client.get(key)
    finally:
        client.close()


def balance(client) -> int:
    response = client.get("/api/me/coins")
    assert response.status_code == 200, response.content
    return response.json()["balance"]


def test_a_delete_confirmed_by_the_replica_is_done(replicated, alice, user, settings):
    # The confirmed path only: room for a replica a loaded machine slows past the fixture's 200 ms
    # (the tests below need the short wait, to see a frozen replica refuse it).
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["OPTIONS"]["SOCKET_TIMEOUT"] = 3.0
    settings.CACHES, settings.CACHE_INVALIDATION_WAIT_MS = caches, 2000
    key = f"user:coins:{{{user.id}}}"
    assert balance(alice) == 30
    replica = replicated.replica_of(replicated.primary_for(key))
    assert alice.post("/api/generations", {"prompt": "a fox"}, format="json").status_code == 202
    assert not PendingInvalidation.objects.exists()
    # The write amended the key (the new balance) and the replica confirmed it (WAIT).
    assert json.loads(raw_get(replica, key))["data"] == {"balance": 29}
    assert balance(alice) == 29
    with CaptureQueriesContext(connection) as queries:
        assert balance(alice) == 29  # cached again, trusted: no pending row holds it back
    assert len(queries) == 0


def generations_used(client) -> int:
    response = client.get("/api/subscription/stats")
    assert response.status_code == 200, response.content
    return response.json()["generations"]["used_today"]


def test_a_delete_the_dying_primary_never_replicated_is_replayed_on_its_promoted_replica(replicated, alice, user):
    # A generation amends the user's stats and coins in one batch on their node: the primary takes
    # the new values, its replica does not confirm them, so both keys' deletes are recorded.
    key = f"subscription:stats:{{{user.id}}}"
    assert generations_used(alice) == 0
    primary = replicated.primary_for(key)
    replica = replicated.replica_of(primary)
    until(lambda: raw_get(replica, key) is not None, "the value never reached the replica")

    # The replica freezes and loses its link: the primary takes the next delete alone.
    replica.pause()
    primary.client().client_kill_filter(_type="replica")
    try:
        assert alice.post("/api/generations", {"prompt": "a fox"}, format="json").status_code == 202
        assert json.loads(raw_get(primary, key))["data"]["generations"]["used_today"] == 1  # the primary took it...
        assert PendingInvalidation.objects.filter(key=key).exists()  # ...but nobody confirmed it
        primary.stop()  # kill -9 before it could replicate it
    finally:
        replica.resume()
    replicated.wait_ok()  # the frozen replica was promoted
    assert replicated.primary_for(key) is replica
    # The lost write: the new primary holds the old value.
    assert json.loads(raw_get(replica, key))["data"]["generations"]["used_today"] == 0

    # Every read serves the new count, and the replayed delete reaches the new primary.
    reads: list[int] = []
    until(lambda: reads.append(generations_used(alice)) or raw_get(replica, key) is None,
          "the pending delete was never replayed on the promoted replica")
    for _ in range(5):
        reads.append(generations_used(alice))
    assert set(reads) == {1}, reads


def test_a_killed_primary_rejoins_as_a_replica_and_the_cache_works_again(replicated, alice, user):
    key = f"user:coins:{{{user.id}}}"
    assert balance(alice) == 30
    primary = replicated.primary_for(key)
    replica = replicated.replica_of(primary)
    primary.stop()
    replicated.wait_ok()
    assert replicated.primary_for(key) is replica
    # Alone, the new primary cannot confirm deletes: they stay pending, reads come from PostgreSQL.
    assert alice.post("/api/generations", {"prompt": "a fox"}, format="json").status_code == 202
    assert balance(alice) == 29

    primary.start()  # same port and directory: its nodes.conf makes it rejoin
    replicated.wait_ok()
    replicated.wait_replicas_synced()
    assert primary.client().info("replication")["role"] == "slave"
    assert replicated.replica_of(replica) is primary

    assert alice.post("/api/generations", {"prompt": "an owl"}, format="json").status_code == 202
    until(lambda: balance(alice) == 28 and not PendingInvalidation.objects.exists(),
          "the pending deletes were never confirmed once a replica was back")
    assert raw_get(primary, key) is not None or balance(alice) == 28  # filled again, and replicated
    with CaptureQueriesContext(connection) as queries:
        assert balance(alice) == 28
    assert len(queries) == 0  # a warm hit again


def breaker_gauges(client) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200
    return {sample.labels["node"]: sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples if sample.name == "cache_breaker_open"}


def test_health_with_one_dead_node_is_degraded_per_node_not_down(revived, cluster_cache, api, client, alice, user):
    key = f"user:coins:{{{user.id}}}"
    assert balance(alice) == 30
    body = api.get("/api/health").json()
    assert body["status"] == "ok" and body["cache"]["status"] == "up"
    names = {f"127.0.0.1:{server.port}" for server in cluster_cache.primaries()}
    assert set(body["cache"]["nodes"]) == names
    assert all(node["status"] == "up" and node["breaker"] == "closed" for node in body["cache"]["nodes"].values())

    victim = cluster_cache.primary_for(key)
    dead = f"127.0.0.1:{victim.port}"
    victim.stop()
    response = api.get("/api/health")
    assert response.status_code == 200  # the API serves: the database is up, two nodes of three too
    body = response.json()
    assert body["status"] == "degraded"
    assert body["cache"]["status"] == "degraded"
    nodes = body["cache"]["nodes"]
    assert nodes[dead]["status"] == "down" and nodes[dead]["error"] == "ConnectionError"
    assert nodes[dead]["breaker"] == "open"
    assert [nodes[name]["status"] for name in sorted(names - {dead})] == ["up", "up"]
    # The breaker gauge is per node: only the dead one is open; the process-wide one stays closed.
    gauges = breaker_gauges(client)
    assert gauges[dead] == 1
    assert all(gauges[name] == 0 for name in names - {dead}) and gauges[""] == 0
    assert balance(alice) == 30  # from the database meanwhile

    # Its replica takes over: the map no longer has the dead node, and the cache is whole again.
    cluster_cache.wait_ok()
    until(lambda: api.get("/api/health").json()["status"] == "ok", "health never came back to ok after the failover")
    assert dead not in api.get("/api/health").json()["cache"]["nodes"]
    assert breaker_gauges(client)[dead] == 0


def test_a_delete_sent_to_a_demoted_primary_refreshes_the_slot_map(replicated, alice, user):
    """A planned failover (CLUSTER FAILOVER): the old primary lives on as a replica and answers
    MOVED. A delete that no read preceded (reads follow MOVED and fix the map themselves; an admin
    edit does not read) is recorded, and the map is refreshed at once, so the next ones go right."""
    from core.cache.api import invalidate
    from core.cache.client import full_key
    from core.cache.cluster import cluster_client, node_of
    from core.cache.registry import FAMILIES

    key = f"subscription:stats:{{{user.id}}}"
    assert generations_used(alice) == 0
    primary = replicated.primary_for(key)
    replica = replicated.replica_of(primary)
    replica.client().execute_command("CLUSTER", "FAILOVER")
    until(lambda: replica.client().info("replication")["role"] == "master"
          and primary.client().info("replication")["role"] == "slave", "the planned failover never happened")
    replicated.wait_ok()
    assert node_of(cluster_client(), full_key(key)) == f"127.0.0.1:{primary.port}"  # the app's map is stale

    invalidate((FAMILIES["subscription:stats"], {"user_id": user.id}))
    assert PendingInvalidation.objects.filter(key=key).exists()  # MOVED: recorded, not lost
    assert node_of(cluster_client(), full_key(key)) == f"127.0.0.1:{replica.port}"
    until(lambda: generations_used(alice) == 0 and not PendingInvalidation.objects.exists(),
          "the recorded delete was never replayed on the new primary")
    assert raw_get(replica, key) is not None  # cached again on the new primary, after the replay


def test_a_dead_node_replaced_by_its_replica_keeps_no_open_breaker_while_pending_deletes_drain(
    revived, cluster_cache, api, client, alice, user, settings
):
    """The pending watcher syncs every node it knows whenever deletes are pending, the dead one too:
    that node serves no slot any more, so it has nothing to drain and nothing is read from it; its
    breaker gauge must not come back to 1 (the documented alert) while /api/health says all is up."""
    from core.cache import pending
    from core.cache.watch import watcher

    settings.CACHE_PENDING_WATCH = True
    settings.CACHE_PENDING_CHECK = 0.2
    settings.CACHE_PENDING_RETRY = 0.2
    settings.CACHE_BREAKER_COOLDOWN = 0.2
    key = f"user:coins:{{{user.id}}}"
    try:
        assert balance(alice) == 30  # the watcher runs from here on
        victim = cluster_cache.primary_for(key)
        dead = f"127.0.0.1:{victim.port}"
        victim.stop()
        assert balance(alice) == 30  # from the database: the dead node's breaker opens
        cluster_cache.wait_ok()
        until(lambda: api.get("/api/health").json()["status"] == "ok", "health never came back to ok after the failover")

        pending.record_pending_invalidations([key])  # another host's delete failed: every node syncs
        until(lambda: not PendingInvalidation.objects.exists(), "the pending delete was never applied")
        time.sleep(1.0)  # more rounds of the watcher
        assert api.get("/api/health").json()["status"] == "ok"
        assert breaker_gauges(client)[dead] == 0
    finally:
        watcher().stop()
