"""Redis Sentinel by configuration, against real processes on loopback (1 primary, 1 replica,
3 sentinels): the guarded connection follows the primary, a planned failover and a kill -9 of the
primary under concurrent reads and writes leave zero 5xx and zero stale values, and a delete the
old primary acknowledged but never replicated is not lost (CACHE_INVALIDATION_REPLICAS=1); so does
a primary that refuses writes (NOREPLICAS) while it serves reads. Through all of them, tokens
revoked meanwhile (deactivation, password change, deletion) are refused within 2 s by every app
process: this one and a gunicorn with two workers on the same sentinels and database."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django_redis.pool import ConnectionFactory

from core.cache.health import HEALTH
from core.cache.ops.verify import verify
from core.cache.topology import use_sentinels
from core.cache.watch import watcher
from core.models import PendingInvalidation
from tests.support.harness import Gunicorn, SentinelSetup
from tests.support.revoked_tokens import REVOCATIONS, RevokedTokens

ROOT = Path(settings.BASE_DIR)


def settings_with(**env: str) -> subprocess.CompletedProcess:
    """Load the settings and run the system checks in a fresh process with this environment."""
    code = ("import django, json; from django.conf import settings; django.setup(); "
            "from django.core import checks; c = settings.CACHES['default']; "
            "print(json.dumps({'location': c['LOCATION'], 'pool': c['OPTIONS'].get('CONNECTION_POOL_CLASS'), "
            "'sentinels': c['OPTIONS'].get('SENTINELS'), 'sentinel_kwargs': c['OPTIONS'].get('SENTINEL_KWARGS'), "
            "'errors': [m.id + ' ' + m.msg for m in checks.run_checks(tags=['caches'])]}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.base",
                               "SECRET_KEY": "s" * 50, **env})


def test_sentinels_by_configuration_alone():
    result = settings_with(REDIS_URL="rediss://app:s3cret@ignored:6379/2", REDIS_SENTINELS="10.0.0.1:26379, s2:26380",
                           REDIS_SENTINEL_SERVICE="cache", REDIS_SENTINEL_PASSWORD="sentinel-pass",
                           REDIS_SENTINEL_TLS="true", CELERY_BROKER_URL="sentinel://10.0.0.1:26379",
                           CELERY_BROKER_SENTINEL_MASTER="jobs")
    data = json.loads(result.stdout)
    assert data["location"] == "rediss://app:s3cret@cache/2"
    assert data["pool"] == "core.cache.health.GuardedSentinelConnectionPool"
    assert data["sentinels"] == [["10.0.0.1", 26379], ["s2", 26380]]
    assert data["sentinel_kwargs"]["password"] == "sentinel-pass" and data["sentinel_kwargs"]["ssl"] is True
    assert data["errors"] == []


@pytest.mark.parametrize(("env", "error"), [
    ({"REDIS_URL": "http://localhost:6379/0"}, "core.E010"),
    ({"REDIS_URL": "redis://localhost:notaport/0"}, "core.E010"),
    ({"REDIS_URL": "redis:///0"}, "core.E010"),
    ({"REDIS_SENTINELS": "sentinel-without-port"}, "core.E011"),
    ({"REDIS_SENTINELS": "s1:26379,s2:99999"}, "core.E011"),
    ({"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_SERVICE": ""}, "core.E012"),
    ({"CACHE_INVALIDATION_REPLICAS": "1", "CACHE_INVALIDATION_WAIT_MS": "500"}, "core.E014"),
    ({"REDIS_SENTINELS": "s1:26379", "REDIS_CLUSTER_NODES": "n1:7000"}, "core.E015"),
])
def test_a_bad_redis_setting_is_a_clear_error_at_startup(env, error):
    data = json.loads(settings_with(**env).stdout)
    assert [e.split()[0] for e in data["errors"]] == [error], data["errors"]


def test_confirmed_deletes_may_be_asked_of_a_cluster():
    # Each key's node WAITs for its own replicas (core/cache/cluster.py): a valid production setting.
    data = json.loads(settings_with(REDIS_CLUSTER_NODES="n1:7000", CACHE_INVALIDATION_REPLICAS="1",
                                    CELERY_BROKER_URL="redis://broker:6379/0").stdout)
    assert data["errors"] == []


@pytest.mark.parametrize(("env", "broker"), [
    ({"REDIS_CLUSTER_NODES": "n1:7000,n2:7001"}, None),  # the default: REDIS_URL, a node
    ({"REDIS_CLUSTER_NODES": "n1:7000,n2:7001"}, "redis://n2:7001/0"),
    ({"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_SERVICE": "cache"}, None),  # a host Sentinel mode ignores
], ids=["cluster-by-default", "cluster-node", "sentinel-by-default"])
def test_the_job_broker_must_be_a_redis_of_its_own_beside_a_cluster_or_sentinels(env, broker):
    env = {"REDIS_URL": "redis://n1:7000/0", **env}
    if broker:
        env["CELERY_BROKER_URL"] = broker
    data = json.loads(settings_with(**env).stdout)
    assert [e.split()[0] for e in data["errors"]] == ["core.E016"], data["errors"]
    env["CELERY_BROKER_URL"] = "redis://broker:6379/0"
    assert json.loads(settings_with(**env).stdout)["errors"] == []


def test_the_guarded_pool_wraps_sentinel_managed_connections():
    from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

    from core.cache.health import GuardedMixin, GuardedSentinelConnectionPool

    plain = GuardedSentinelConnectionPool("cache", Sentinel([("127.0.0.1", 1)]))
    tls = GuardedSentinelConnectionPool("cache", Sentinel([("127.0.0.1", 1)]), ssl=True)
    assert issubclass(plain.connection_class, GuardedMixin) and issubclass(plain.connection_class, SentinelManagedConnection)
    assert issubclass(tls.connection_class, GuardedMixin) and issubclass(tls.connection_class, SentinelManagedSSLConnection)


@pytest.fixture
def sentinels(settings, transactional_db):
    setup = SentinelSetup().start()
    cache = copy.deepcopy(settings.CACHES["default"])
    use_sentinels(cache, sentinels=setup.addresses, service=setup.service)
    ConnectionFactory._pools.pop(cache["LOCATION"], None)  # a pool of an earlier setup's sentinels
    settings.CACHES = {**settings.CACHES, "default": cache}
    settings.CACHE_INVALIDATION_REPLICAS = 1
    settings.CACHE_BREAKER_COOLDOWN = 0.2
    settings.CACHE_PENDING_RETRY = 0.2
    settings.CACHE_PENDING_WATCH = True
    HEALTH.reset()
    yield setup
    watcher().stop()
    ConnectionFactory._pools.pop(cache["LOCATION"], None)
    setup.close()
    HEALTH.reset()


@pytest.fixture
def other_host(sentinels):
    """A second app process on the same sentinels and test database: a gunicorn, 2 workers."""
    from django.db import connection

    server = Gunicorn(connection.settings_dict["NAME"], "redis://sentinel-managed/0",
                      REDIS_SENTINELS=",".join(sentinels.addresses), REDIS_SENTINEL_SERVICE=sentinels.service,
                      CACHE_INVALIDATION_REPLICAS="1", CACHE_PENDING_WATCH="1", CACHE_PENDING_RETRY="0.2",
                      CACHE_BREAKER_COOLDOWN="0.2")
    yield server
    server.close()


@pytest.fixture
def revoked(sentinels, other_host, make_user):
    """One user per way of revoking a token, whose profile both processes (every worker) cached,
    and on the replica too."""
    users = {name: make_user(f"revoked-{name}@example.com") for name in REVOCATIONS}
    tokens = RevokedTokens(users, [other_host])
    tokens.warm()
    sentinels.wait_for(lambda: all(sentinels.replica.client().exists(profile_key(name)) for name in REVOCATIONS),
                       "the revoked users' profiles never reached the replica")
    return tokens


def profile_key(revocation: str) -> str:
    return f"user:email:revoked-{revocation}@example.com"


@pytest.mark.slow
def test_the_cache_follows_the_primary_that_the_sentinels_name(sentinels, alice, user):
    from django.core.cache import cache

    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert sentinels.primary.client().exists(f"user:coins:{user.id}")
    cache.set("throttle-probe", 1)  # Django's own cache shares the connection
    assert cache.get("throttle-probe") == 1
    health = alice.get("/api/health").json()
    assert health["status"] == "ok", health


class Load:
    """Readers and writers through the API and the services; every write then reads its own
    balance back, which must never be older than what it wrote."""

    def __init__(self, users, client_for) -> None:
        self.users, self.client_for = users, client_for
        self.statuses: list[int] = []
        self.stale: list[tuple] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(u,)) for u in users]
        self.threads += [threading.Thread(target=self._read, args=(u,)) for u in users]

    def _write(self, user) -> None:
        from django.db import connection

        from accounts.models import CoinLedgerEntry
        from accounts.services import coins_apply

        client = self.client_for(user)
        try:
            while not self.stop.is_set():
                balance = coins_apply(user_id=user.id, amount=1, reason=CoinLedgerEntry.Reason.ADJUSTMENT).balance_after
                response = client.get("/api/me/coins")
                self.statuses.append(response.status_code)
                if response.status_code == 200 and response.json()["balance"] < balance:
                    self.stale.append((user.id, balance, response.json()))
                time.sleep(0.01)
        except Exception as exc:  # asserted on by the test
            self.errors.append(exc)
        finally:
            connection.close()

    def _read(self, user) -> None:
        from django.db import connection

        client = self.client_for(user)
        try:
            while not self.stop.is_set():
                for url in ("/api/me", "/api/me/coins", "/api/characters/luna", "/api/subscription"):
                    self.statuses.append(client.get(url).status_code)
        except Exception as exc:
            self.errors.append(exc)
        finally:
            connection.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def settle_and_compare(sentinels, users, client_for) -> None:
    """Once the pending deletes are applied, every cached value equals the database, and every
    user's balance through the API too."""
    from accounts.models import User

    sentinels.wait_for(lambda: not PendingInvalidation.objects.exists(), "pending deletes never applied", 30)
    for user in users:
        expected = User.objects.get(pk=user.id).coin_balance
        for _ in range(2):
            assert client_for(user).get("/api/me/coins").json() == {"balance": expected}
    result = verify(client=sentinels.primary.client())
    assert result.drifted == [], result.drifted
    assert sum(result.checked.values()) > 0


@pytest.mark.slow
def test_a_planned_failover_under_load_serves_no_error_and_nothing_stale(
    sentinels, revoked, make_user, client_for, characters
):
    users = [make_user(coins=10) for _ in range(3)]
    for user in users:
        client_for(user).get("/api/me/coins")
    with Load(users, client_for) as load:
        time.sleep(1.0)
        old = sentinels.start_failover()
        revoked.revoke("deactivate")  # while the sentinels switch the primaries
        sentinels.wait_new_primary(old)
        revoked.revoke("password")  # right after, on the new primary
        revoked.revoke("delete")
        revoked.refused()
        time.sleep(1.0)
    assert sentinels.primary_port() != old
    assert load.statuses and set(load.statuses) == {200}, sorted(set(load.statuses))
    assert load.errors == [] and load.stale == []
    settle_and_compare(sentinels, users, client_for)
    revoked.refused(steady=0.5)  # and still, once everything pending is applied


@pytest.mark.slow
def test_a_delete_the_dead_primary_never_replicated_is_not_lost(sentinels, revoked, make_user, client_for, characters):
    """The replica is frozen (SIGSTOP) and cut off, a write's delete reaches only the primary,
    the primary is killed (-9) and the replica, still holding the old value, is promoted."""
    from accounts.models import CoinLedgerEntry, User
    from accounts.services import coins_apply

    user = make_user(coins=10)
    other = make_user(coins=10)
    client = client_for(user)
    key = f"user:coins:{user.id}"
    assert client.get("/api/me/coins").json() == {"balance": 10}
    old_primary, replica = sentinels.primary, sentinels.replica
    sentinels.wait_for(lambda: replica.client().exists(key), "the value never reached the replica")

    replica.pause()
    # Cut the replication link too: whatever the primary writes now stays in its own memory (the
    # bytes already in the paused replica's socket would otherwise still arrive).
    old_primary.client().client_kill_filter(_type="replica")
    try:
        coins_apply(user_id=user.id, amount=5, reason=CoinLedgerEntry.Reason.ADJUSTMENT)
        assert not old_primary.client().exists(key)  # the primary took the delete ...
        assert PendingInvalidation.objects.filter(key=key).exists()  # ... but nobody confirmed it
        for name in REVOCATIONS:  # the revoked users' profile deletes are pending too (the breaker
            revoked.revoke(name)  # opened on the unconfirmed delete: they were not even tried)
            assert PendingInvalidation.objects.filter(key=profile_key(name)).exists()
        old_port = old_primary.port
        old_primary.stop()  # kill -9
    finally:
        replica.resume()
    assert b'"balance":10' in replica.client().get(key)  # what it will bring along when promoted
    assert all(replica.client().exists(profile_key(name)) for name in REVOCATIONS)  # the revoked profiles too
    revoked.refused()  # by both processes while the primary is gone

    with Load([user, other], client_for) as load:
        new_port = sentinels.wait_new_primary(old_port)
        assert new_port == replica.port
        revoked.refused()  # while the promoted replica still holds their old profiles
        # The load keeps adding to this balance, so "fresh" means at least what the database held
        # before the read; the promoted replica's stale 10 is far below that.
        committed = User.objects.get(pk=user.id).coin_balance
        assert client.get("/api/me/coins").json()["balance"] >= committed > 10
        old_primary.start()  # comes back; the sentinels make it the new primary's replica
        sentinels.wait_replicated(old_primary)
        revoked.refused()
    assert load.statuses and set(load.statuses) == {200}, sorted(set(load.statuses))
    assert load.errors == [] and load.stale == []
    settle_and_compare(sentinels, [user, other], client_for)
    revoked.refused(steady=0.5)


@pytest.mark.slow
def test_after_a_planned_failover_the_next_delete_goes_to_the_new_primary(sentinels, make_user, client_for):
    """The demoted primary stays a primary, answering and taking writes, for about ten seconds
    after the promotion (until the sentinels reconfigure it); the app's pooled connections must
    leave it well before that."""
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    user = make_user(coins=10)
    client = client_for(user)
    key = f"user:coins:{user.id}"
    for _ in range(2):  # cached, over a pooled connection to the first primary
        assert client.get("/api/me/coins").json() == {"balance": 10}
    old, new = sentinels.primary, sentinels.replica
    sentinels.wait_for(lambda: new.client().exists(key), "the value never reached the replica")

    sentinels.failover()
    time.sleep(1.5)  # the bound asked of the app: it follows the promotion within about a second
    assert old.client().info("replication")["role"] == "master", "the old primary was reconfigured already"
    coins_apply(user_id=user.id, amount=5, reason=CoinLedgerEntry.Reason.ADJUSTMENT)

    assert b'"balance":10' in old.client().get(key)  # the delete did not go to the demoted primary ...
    assert b'"balance":10' not in (new.client().get(key) or b"")  # ... but to the new one
    # The new primary has no replica yet; nothing could be promoted holding its old value, so it
    # confirmed the delete alone: nothing pending, and the cache is filled there again.
    assert not PendingInvalidation.objects.filter(key=key).exists()
    for _ in range(2):
        assert client.get("/api/me/coins").json() == {"balance": 15}
    assert b'"balance":15' in new.client().get(key)


@pytest.mark.slow
def test_a_primary_lost_for_good_leaves_the_cache_to_the_promoted_replica(sentinels, make_user, client_for):
    """A delete reaches only the primary (its replica frozen and cut off), the primary is killed
    and never comes back. The promoted replica, which holds the old value, gets the delete and
    serves the cache again, without waiting for the dead node."""
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    user = make_user(coins=10)
    client = client_for(user)
    key = f"user:coins:{user.id}"
    assert client.get("/api/me/coins").json() == {"balance": 10}
    old, replica = sentinels.primary, sentinels.replica
    sentinels.wait_for(lambda: replica.client().exists(key), "the value never reached the replica")
    replica.pause()
    old.client().client_kill_filter(_type="replica")
    try:
        coins_apply(user_id=user.id, amount=5, reason=CoinLedgerEntry.Reason.ADJUSTMENT)
        assert PendingInvalidation.objects.filter(key=key).exists()  # a replica that may be promoted missed it
        old_port = old.port
        old.stop()  # kill -9, for good
    finally:
        replica.resume()
    assert sentinels.wait_new_primary(old_port) == replica.port

    sentinels.wait_for(lambda: not PendingInvalidation.objects.exists(),
                       "the pending delete was never applied on the promoted replica", 20)
    assert b'"balance":10' not in (replica.client().get(key) or b"")
    for _ in range(2):
        assert client.get("/api/me/coins").json() == {"balance": 15}
    assert b'"balance":15' in replica.client().get(key)  # trusted again: filled there
    assert replica.client().info("replication")["connected_slaves"] == 0  # still alone


@pytest.mark.slow
def test_a_replica_down_for_a_while_still_keeps_a_lone_primarys_deletes_pending(sentinels, make_user, client_for):
    """The replica is frozen and cut off until the sentinels call it down: the primary then has no
    replica, but that one may come back and be promoted with what it had, so the primary cannot
    confirm a delete alone."""
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    user = make_user(coins=10)
    key = f"user:coins:{user.id}"
    assert client_for(user).get("/api/me/coins").json() == {"balance": 10}
    primary, replica = sentinels.primary, sentinels.replica
    replica.pause()
    try:
        primary.client().client_kill_filter(_type="replica")
        sentinels.wait_for(lambda: all(r["is_sdown"] for r in sentinels.sentinels[0].client().sentinel_slaves(sentinels.service)),
                           "the sentinels never called the frozen replica down", 15)
        coins_apply(user_id=user.id, amount=5, reason=CoinLedgerEntry.Reason.ADJUSTMENT)
        assert not primary.client().exists(key)
        assert PendingInvalidation.objects.filter(key=key).exists()
    finally:
        replica.resume()
    sentinels.wait_replicated(replica)
    sentinels.wait_for(lambda: not PendingInvalidation.objects.exists(), "the pending delete was never confirmed", 30)


def refuses_writes(server) -> bool:
    """Does the server answer NOREPLICAS to a write (and still serve reads)?"""
    client = server.client()
    try:
        client.set("write-probe", 1)
    except redis.ResponseError as exc:
        return "NOREPLICAS" in str(exc)
    client.delete("write-probe")
    return False


@pytest.mark.slow
def test_a_primary_that_refuses_writes_but_serves_reads_serves_nothing_stale(
    sentinels, revoked, make_user, client_for, characters
):
    """min-replicas-to-write 1 and the only replica frozen: the primary answers NOREPLICAS to every
    write, deletes included, and still serves reads. The sentinels see no reason to fail over."""
    users = [make_user(coins=10) for _ in range(3)]
    for user in users:
        client_for(user).get("/api/me/coins")
        client_for(user).get("/api/me/coins")
    primary, replica = sentinels.primary, sentinels.replica
    primary.client().config_set("min-replicas-max-lag", 1)
    primary.client().config_set("min-replicas-to-write", 1)
    with Load(users, client_for) as load:
        time.sleep(0.5)
        replica.pause()
        try:
            sentinels.wait_for(lambda: refuses_writes(primary), "the primary never refused writes", 15)
            cached = primary.client().get(f"user:coins:{users[0].id}")  # reads still served
            for name in REVOCATIONS:
                revoked.revoke(name)
            assert primary.client().exists(profile_key("deactivate"))  # the delete was refused
            revoked.refused()
            time.sleep(1.0)  # more writes while it refuses them
            assert primary.client().get(f"user:coins:{users[0].id}") == cached  # never deleted, never refilled
        finally:
            replica.resume()
        sentinels.wait_for(lambda: not refuses_writes(primary), "the primary never took writes again")
        revoked.refused()
        time.sleep(1.0)
    assert sentinels.primary_port() == primary.port
    assert load.statuses and set(load.statuses) == {200}, sorted(set(load.statuses))
    assert load.errors == [] and load.stale == []
    settle_and_compare(sentinels, users, client_for)
    revoked.refused(steady=0.5)


def test_gunicorn_refuses_to_start_with_a_bad_redis_setting(tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "-c", str(ROOT / "config" / "gunicorn.conf.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.base", "SECRET_KEY": "s" * 50,
             "REDIS_SENTINELS": "no-port-here",
             "GUNICORN_BIND": "127.0.0.1:0"},
    )
    assert result.returncode != 0
    assert "core.E011" in result.stderr and "no-port-here" in result.stderr
