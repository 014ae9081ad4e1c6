"""Two hosts on one Redis of a test module's own, for the pending-invalidation tests: this test
process (``own_redis``) and a gunicorn with 2 workers (``start_other_host``). ``refuse_writes``
makes that Redis refuse every write (NOREPLICAS) while it keeps serving reads.

The fixtures are a plugin of the suite (conftest.py); ``shared_redis`` is module-scoped, so each
module that asks for it gets a Redis of its own."""

from __future__ import annotations

import copy

import pytest

from tests.support.harness import Gunicorn, RedisServer


def refuse_writes(server: RedisServer, refuse: bool = True) -> None:
    """NOREPLICAS: Redis keeps serving reads and refuses every write, deletes included."""
    server.client().config_set("min-replicas-to-write", 1 if refuse else 0)


@pytest.fixture(scope="module")
def shared_redis():
    """One Redis for a module's tests and the gunicorn they share."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def own_redis(shared_redis, settings):
    """This process on ``shared_redis``, emptied and taking writes, its watcher on."""
    from core.cache.health import HEALTH
    from core.cache.watch import watcher

    shared_redis.wipe()
    refuse_writes(shared_redis, refuse=False)
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = shared_redis.url
    settings.CACHES = caches
    settings.CACHE_PENDING_WATCH = True
    settings.CACHE_PENDING_RETRY = 0.2
    settings.CACHE_BREAKER_COOLDOWN = 0.3
    HEALTH.reset()
    yield shared_redis
    watcher().stop()
    refuse_writes(shared_redis, refuse=False)
    HEALTH.reset()


def start_other_host(redis: RedisServer, **env: str) -> Gunicorn:
    """The other host: gunicorn on the test database and ``redis``, its watcher on (``env`` adds to
    or overrides its settings). The caller closes it."""
    from django.db import connection

    return Gunicorn(connection.settings_dict["NAME"], redis.url, **{
        "CACHE_PENDING_WATCH": "1", "CACHE_PENDING_RETRY": "0.2", "CACHE_BREAKER_COOLDOWN": "0.3", **env})
