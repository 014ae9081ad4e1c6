"""The near cache: the shared keys and the user's own key served in process, and every change to them
in Redis (by any client, any process, any host), a lost tracking connection, a restart or a stalled
Redis reaching this process within a bounded wait. Each test runs on a redis-server of its own, so it
can count the commands Redis received (INFO commandstats) and kill, restart or pause it."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.cache.api import Payload
from tests.support import harness
from tests.support.harness import cache_on_own_redis

pytestmark = [pytest.mark.django_db(transaction=True)]

# The waits below are bounds, not speeds: the message or the flush normally lands in milliseconds.
BOUND = 3.0
NEAR_READS = ["/api/characters", "/api/characters/luna", "/api/generation/settings", "/api/me"]


@pytest.fixture
def own(settings):
    settings.CACHE_BREAKER_COOLDOWN = 0.2
    settings.CACHE_NEAR_HEARTBEAT_MS = 100
    settings.CACHE_NEAR_MAX_SILENCE_MS = 400
    with cache_on_own_redis(settings) as server:
        yield server


def commands(server) -> int:
    """Commands the server has run, but for the tracking heartbeat (PING) and this count (HELLO, INFO)."""
    stats = server.client().info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_ping", "cmdstat_info", "cmdstat_hello"))


def held(client, server, url: str):
    """Read ``url`` until a read costs Redis nothing (the tracking connection is up and the keys are
    held), within the bound; the last response."""
    deadline = time.monotonic() + BOUND
    while True:
        before = commands(server)
        response = client.get(url)
        assert response.status_code == 200, response.content
        if commands(server) == before:
            return response
        assert time.monotonic() < deadline, f"{url} never served without Redis"
        time.sleep(0.02)


def until(condition, what: str, bound: float = BOUND):
    return harness.until(condition, what, timeout=bound, every=0.01)


def list_body(alice) -> bytes:
    return alice.get("/api/characters").content


@pytest.mark.parametrize("url", NEAR_READS)
def test_a_warm_read_sends_no_redis_command_and_no_sql(own, alice, characters, sql_statements, url):
    first = held(alice, own, url)
    before = commands(own)
    with sql_statements() as run:
        for _ in range(5):
            response = alice.get(url)
            assert response.status_code == 200
            assert response.content == first.content
    assert commands(own) == before
    assert run == []


def test_a_per_user_read_still_reads_the_users_own_coins_from_redis(own, alice, characters):
    held(alice, own, "/api/characters")
    alice.get("/api/me/coins")  # a miss fills user:coins
    before = commands(own)
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert commands(own) == before + 1  # one MGET: the user's key came from the process, coins did not


def test_a_change_made_in_redis_by_another_client_reaches_the_next_reads(own, alice, characters):
    held(alice, own, "/api/characters")
    other = own.client()
    changed = Payload.of({"characters": [{"name": "changed-elsewhere"}]})
    other.set("characters:list", changed.pack())
    until(lambda: list_body(alice) == changed.body, "the change made in Redis was never served")
    # And a delete (with the row changed behind the cache's back): the next reads load the database.
    other.delete("characters:list")
    from characters.models import Character

    Character.objects.filter(name="luna").update(display_name="Luna Reloaded")
    until(lambda: b"Luna Reloaded" in list_body(alice), "the delete made in Redis was never noticed")


def test_a_save_in_another_process_reaches_this_one(own, alice, characters, settings):
    from django.db import connection

    held(alice, own, "/api/characters/luna")
    held(alice, own, "/api/characters")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "REDIS_URL": own.url,
           "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
           "CACHE_PENDING_WATCH": "false"}
    script = ("import django; django.setup()\n"
              "from characters.models import Character\n"
              "luna = Character.objects.get(name='luna'); luna.display_name = 'Luna From Afar'; luna.save()\n")
    subprocess.run([sys.executable, "-c", script], env=env, cwd=settings.BASE_DIR, check=True, timeout=60)
    # The writer's delete was acknowledged before it exited: this process sees it within the bound.
    until(lambda: alice.get("/api/characters/luna").json()["display_name"] == "Luna From Afar",
          "another process's save never reached this one")
    until(lambda: b"Luna From Afar" in list_body(alice), "the list never followed")
    held(alice, own, "/api/characters/luna")  # and is held again


def test_this_process_reads_its_own_write_at_once(own, alice, characters):
    from characters.models import Character

    held(alice, own, "/api/characters/luna")
    luna = Character.objects.get(name="luna")
    luna.display_name = "Luna Now"
    luna.save()  # the delete runs on commit; the very next read must see it
    assert alice.get("/api/characters/luna").json()["display_name"] == "Luna Now"


def test_a_user_save_reaches_authentication_at_once(own, alice, user):
    from accounts.models import User

    held(alice, own, "/api/me")
    account = User.objects.get(pk=user.id)
    account.is_active = False
    account.save()
    assert alice.get("/api/me").status_code == 401


def tracking_id(server) -> int:
    return until(lambda: next((c["id"] for c in server.client().client_list() if c["name"] == "cache-near-tracking"), None),
                 "no tracking connection")


@pytest.mark.parametrize("how", ["client_kill", "kill_by_type"])
def test_a_killed_tracking_connection_empties_the_near_cache(own, alice, characters, how):
    held(alice, own, "/api/characters")
    tracker = tracking_id(own)
    other = own.client()
    if how == "client_kill":
        other.client_kill_filter(_id=tracker)
    else:
        other.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    # Written while nothing tracks this process's keys: only emptying the near cache shows it.
    changed = Payload.of({"characters": [{"name": "written-while-untracked"}]})
    other.set("characters:list", changed.pack())
    until(lambda: list_body(alice) == changed.body, "a value held before tracking was lost was served on")
    assert tracking_id(own) != tracker  # tracking is back on a new connection
    held(alice, own, "/api/characters")  # and the near cache with it


def test_a_redis_restart_empties_the_near_cache(own, alice, characters):
    held(alice, own, "/api/characters")
    own.restart()  # no AOF: it comes back empty
    changed = Payload.of({"characters": [{"name": "after-restart"}]})
    own.client().set("characters:list", changed.pack())
    until(lambda: list_body(alice) == changed.body, "a value from before the restart was served on")
    held(alice, own, "/api/characters")


def test_a_stalled_redis_stops_the_near_cache_within_the_silence_bound(own, alice, characters):
    from characters.models import Character

    held(alice, own, "/api/characters/luna")
    own.pause()  # SIGSTOP: no heartbeat answer, and no invalidation could arrive either
    try:
        Character.objects.filter(name="luna").update(display_name="Luna Meanwhile")  # no invalidation
        # Once the silence bound has passed, the read goes to Redis (stalled, the breaker opens) and
        # then the database: the row as it is now, not the held value.
        until(lambda: alice.get("/api/characters/luna").json()["display_name"] == "Luna Meanwhile",
              "the near cache was still served after the heartbeat was missed")
    finally:
        own.resume()


def test_a_flush_of_the_server_empties_the_near_cache(own, alice, characters):
    from characters.models import Character

    held(alice, own, "/api/characters/luna")
    Character.objects.filter(name="luna").update(display_name="Luna After Flush")  # no invalidation
    own.client().flushdb()  # its own server, never the shared one
    until(lambda: alice.get("/api/characters/luna").json()["display_name"] == "Luna After Flush",
          "a FLUSHDB did not empty the near cache")


def test_setting_off_reads_redis_on_every_request(own, alice, characters, settings):
    settings.CACHE_NEAR_ENABLED = False
    alice.get("/api/characters")
    for _ in range(3):
        before = commands(own)
        assert alice.get("/api/characters").status_code == 200
        assert commands(own) == before + 1  # one MGET: the user's key and the list, as before


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples}


def test_near_hits_per_family_in_metrics(own, alice, characters, client):
    held(alice, own, "/api/characters")
    before = scrape(client)
    for _ in range(3):
        alice.get("/api/characters")
    after = scrape(client)
    for family in ("characters:list", "user:email"):
        key = ("cache_near_hits_total", (("family", family),))
        assert after.get(key, 0) - before.get(key, 0) == 3, family
        hits = ("cache_requests_total", (("family", family), ("result", "hit")))
        assert after.get(hits, 0) - before.get(hits, 0) == 3, family  # still hits in the hit ratio


@pytest.mark.slow
def test_cluster_mode_keeps_the_near_cache_off(cluster_cache, alice, characters, redis_cluster):
    alice.get("/api/characters")
    for _ in range(3):
        before = sum(int(v["calls"]) for node in redis_cluster.primaries()
                     for k, v in node.client().info("commandstats").items() if k in ("cmdstat_get", "cmdstat_mget"))
        assert alice.get("/api/characters").status_code == 200
        after = sum(int(v["calls"]) for node in redis_cluster.primaries()
                    for k, v in node.client().info("commandstats").items() if k in ("cmdstat_get", "cmdstat_mget"))
        assert after > before


@pytest.fixture
def sentinels(settings, transactional_db):
    import copy

    from django_redis.pool import ConnectionFactory

    from core.cache.health import HEALTH
    from core.cache.topology import use_sentinels
    from tests.support.harness import SentinelSetup

    setup = SentinelSetup().start()
    cache = copy.deepcopy(settings.CACHES["default"])
    use_sentinels(cache, sentinels=setup.addresses, service=setup.service)
    ConnectionFactory._pools.pop(cache["LOCATION"], None)
    settings.CACHES = {**settings.CACHES, "default": cache}
    settings.CACHE_BREAKER_COOLDOWN = 0.2
    settings.CACHE_NEAR_HEARTBEAT_MS = 100
    settings.CACHE_NEAR_MAX_SILENCE_MS = 400
    HEALTH.reset()
    yield setup
    ConnectionFactory._pools.pop(cache["LOCATION"], None)
    setup.close()
    HEALTH.reset()


@pytest.mark.slow
def test_a_sentinel_failover_empties_the_near_cache(sentinels, alice, characters):
    old = sentinels.primary
    held(alice, old, "/api/characters")
    sentinels.failover()
    # Written on the new primary only: what this process held from the old one must not be served
    # once the sentinels have demoted the old primary (they close its clients then; until then the
    # plain path, too, reads the old primary over its open connections).
    changed = Payload.of({"characters": [{"name": "after-failover"}]})
    sentinels.primary.client().set("characters:list", changed.pack())
    sentinels.wait_for(lambda: old.client().info("replication")["role"] == "slave", "the old primary was never demoted")
    until(lambda: list_body(alice) == changed.body, "a value held from the old primary was served on")
    held(alice, sentinels.primary, "/api/characters")  # tracking follows the new primary


@pytest.mark.slow
def test_every_gunicorn_worker_tracks_after_the_fork_and_follows_a_save(own, alice, characters):
    from django.db import connection

    from characters.models import Character
    from tests.support.harness import Gunicorn, request

    server = Gunicorn(connection.settings_dict["NAME"], own.url)
    headers = {"Authorization": alice._credentials["HTTP_AUTHORIZATION"]}

    def names() -> set[str]:
        """What every worker answers: connections opened (each taken by an idle worker) before the
        requests go out, so a fast answer does not leave the other worker without a request."""
        connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(server.workers)]
        for http_connection in connections:
            http_connection.connect()
        time.sleep(0.05)
        bodies = set()
        for http_connection in connections:
            http_connection.request("GET", "/api/characters/luna", headers=headers)
        for http_connection in connections:
            response = http_connection.getresponse()
            assert response.status == 200
            bodies.add(response.read())
            http_connection.close()
        return {Payload(body, "").data()["display_name"] for body in bodies}

    try:
        # One tracking connection per worker, each started in its worker after the fork (a worker
        # still booting gets its first request later: the wait covers that, not the tracking).
        until(lambda: names() == {"Luna"} and server.workers <= sum(
            c["name"] == "cache-near-tracking" for c in own.client().client_list()),
            "not every worker started its tracking connection", bound=30)

        def near_hits() -> float:
            text = request("127.0.0.1", server.port, "GET", "/metrics")[2].decode()
            return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                       if sample.name == "cache_near_hits_total" and sample.labels == {"family": "character"})

        until(lambda: names() == {"Luna"} and near_hits() > 0, "no worker served a near hit")
        luna = Character.objects.get(name="luna")
        luna.display_name = "Luna Everywhere"
        luna.save()
        until(lambda: names() == {"Luna Everywhere"}, "a worker kept serving the value from before the save")
    finally:
        server.close()


def test_a_value_read_while_it_changes_is_not_held(own, alice, characters, monkeypatch):
    """The write lands between the read's reply and the moment the process would hold the value:
    the old value must not be held (it would be served until the key next changed)."""
    held(alice, own, "/api/characters")
    other = own.client()
    old = other.get("characters:list")
    other.delete("characters:list")
    # Once the delete's message has landed, a miss stores the same bytes again (not held: a fill).
    until(lambda: alice.get("/api/characters") and other.get("characters:list") == old, "never stored again")
    changed = Payload.of({"characters": [{"name": "changed-mid-read"}]})
    unpack = Payload.unpack.__func__
    raced = []

    def racing_unpack(cls, raw):
        if raw == old and not raced:
            raced.append(True)
            other.set("characters:list", changed.pack())
            time.sleep(0.3)  # the invalidation message arrives meanwhile
        return unpack(cls, raw)

    monkeypatch.setattr(Payload, "unpack", classmethod(racing_unpack))
    alice.get("/api/characters")  # reads the old bytes; the change lands before they are held
    assert raced
    assert list_body(alice) == changed.body


def test_a_held_key_whose_delete_was_refused_elsewhere_is_not_served_from_the_process(own, alice, characters,
                                                                                      settings):
    """Another process's rename: Redis refuses its delete (NOREPLICAS), so nothing changes in Redis
    and no invalidation message comes; the key is pending. This process hears of it (the pending
    watcher) and must stop serving what it holds for the key."""
    from django.db import connection

    settings.CACHE_PENDING_WATCH = True
    settings.CACHE_PENDING_CHECK = 0.2
    held(alice, own, "/api/characters/luna")
    own.client().config_set("min-replicas-to-write", 1)
    try:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "REDIS_URL": own.url,
               "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
               "CACHE_PENDING_WATCH": "false"}
        script = ("import django; django.setup()\n"
                  "from characters.models import Character\n"
                  "luna = Character.objects.get(name='luna'); luna.display_name = 'Luna Refused'; luna.save()\n")
        subprocess.run([sys.executable, "-c", script], env=env, cwd=settings.BASE_DIR, check=True, timeout=60)
        assert own.client().exists("character:luna")  # the delete never happened in Redis
        until(lambda: alice.get("/api/characters/luna").json()["display_name"] == "Luna Refused",
              "the process kept serving a key whose delete is pending")
    finally:
        own.client().config_set("min-replicas-to-write", 0)
