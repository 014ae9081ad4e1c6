"""The pending-invalidation watcher without LISTEN (CACHE_PENDING_NOTIFY = "poll"), for a database
reached through a transaction-pooling PgBouncer: no worker keeps a PostgreSQL connection between its
looks at the table (in "listen" mode each worker keeps one for LISTEN), a delete that failed in
another process is still honoured by every worker within the bound, and each look publishes the
number of pending keys in /metrics (cache_pending_keys)."""

from __future__ import annotations

import copy
import time

import pytest
from django.db import connection

from core.cache.health import HEALTH
from core.models import PendingInvalidation
from tests.support.harness import Gunicorn, RedisServer, request, until
from tests.support.revoked_tokens import RevokedTokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHECK_EVERY = 0.5  # CACHE_PENDING_CHECK of the gunicorn: the bound a polling worker keeps


@pytest.fixture
def redis_server(settings):
    server = RedisServer().start()
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = server.url
    settings.CACHES = caches
    settings.CACHE_PENDING_WATCH = False  # this process: only the gunicorn's watchers are under test
    HEALTH.reset()
    yield server
    HEALTH.reset()
    server.close()


def backends() -> set[tuple[int, object]]:
    """This test database's PostgreSQL backends other than this test's own: (pid, start)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, backend_start FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return set(cursor.fetchall())


def held_connections(before: set, seconds: float = 4 * CHECK_EVERY) -> set:
    """Backends that stayed connected over several looks of every watcher (new since ``before``)."""
    first = backends() - before
    time.sleep(seconds)
    return first & backends()


def pending_gauge(server: Gunicorn) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = request("127.0.0.1", server.port, "GET", "/metrics")
    assert status == 200
    return next(sample.value for family in text_string_to_metric_families(body.decode())
                for sample in family.samples if sample.name == "cache_pending_keys")


@pytest.mark.parametrize("mode", ["listen", "poll"])
def test_a_polling_worker_holds_no_connection_and_still_honours_a_delete_that_failed_elsewhere(
    redis_server, make_user, mode
):
    before = backends()
    server = Gunicorn(connection.settings_dict["NAME"], redis_server.url, CACHE_PENDING_WATCH="1",
                      CACHE_PENDING_NOTIFY=mode, CACHE_PENDING_CHECK=str(CHECK_EVERY),
                      CACHE_PENDING_RETRY="0.2", CACHE_BREAKER_COOLDOWN="0.3")
    try:
        user = make_user("polled@example.com")
        tokens = RevokedTokens({"deactivate": user}, [server])
        tokens.warm()  # every worker served cached reads: each one's watcher runs
        assert redis_server.client().exists("user:email:polled@example.com")

        held = held_connections(before)
        if mode == "listen":  # one LISTEN connection per worker, kept for as long as it lives
            assert len(held) == server.workers, held
        else:  # the test settings' CONN_MAX_AGE=0: each look's connection is given back at once
            assert held == set()

        # Redis refuses writes (NOREPLICAS): this process's delete is recorded as pending.
        redis_server.client().config_set("min-replicas-to-write", 1)
        tokens.revoke("deactivate")
        assert PendingInvalidation.objects.filter(key="user:email:polled@example.com").exists()
        tokens.refused()  # every worker of the gunicorn within 2 s, by its look alone when polling
        pending = PendingInvalidation.objects.count()  # the user's keys (profile, balance)
        until(lambda: pending_gauge(server) == pending, f"cache_pending_keys never showed the {pending} pending keys")

        redis_server.client().config_set("min-replicas-to-write", 0)
        until(lambda: not PendingInvalidation.objects.exists(), "the watchers never applied the pending delete")
        until(lambda: pending_gauge(server) == 0, "cache_pending_keys never came back to 0")
        assert not redis_server.client().exists("user:email:polled@example.com")
    finally:
        server.close()
