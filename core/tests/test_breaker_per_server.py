"""One breaker per Redis server: a dead second cache alias (with the project's own OPTIONS, as in
Django's cache test suite) never switches off the cache's own Redis."""

import copy
import logging
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples}


@pytest.fixture
def dead_alias(settings):
    """caches["other"]: the default's OPTIONS on a port nothing listens on."""
    from django.core.cache import caches

    from core.cache.health import reset_server_healths

    dead = RedisServer()  # never started: connection refused
    configured = copy.deepcopy(settings.CACHES)
    configured["other"] = {**copy.deepcopy(configured["default"]), "LOCATION": dead.url}
    settings.CACHES = configured
    yield caches["other"], dead.port
    reset_server_healths()
    dead.close()


def test_a_dead_second_alias_never_opens_the_breaker_of_the_cache_redis(
        alice, characters, client, dead_alias, caplog, django_assert_num_queries):
    from django.core.cache import caches

    from core.cache.health import HEALTH

    other, dead_port = dead_alias
    url = "/api/characters/luna"
    first = alice.get(url)
    assert first.status_code == 200
    alice.get(url)  # warm: the first sync is done, the key is stored

    stop = threading.Event()
    failures = []

    def hammer() -> None:
        while not stop.is_set():
            other.set("k", "v")  # IGNORE_EXCEPTIONS: dropped, as the project's options say
            if other.get("k") is not None:
                failures.append("a dead server answered")

    caplog.set_level(logging.INFO, logger="core.cache")
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 1.5  # longer than the breaker's cooldown
        served = 0
        while time.monotonic() < deadline:
            with django_assert_num_queries(0):  # a bypass would load from PostgreSQL
                response = alice.get(url)
            assert response.status_code == 200
            assert response.content == first.content
            caches["default"].set("throttle", served)
            assert caches["default"].get("throttle") == served  # Django's cache keeps its writes
            served += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures
    assert served > 10
    assert HEALTH.state == "closed" and not HEALTH.blocking()
    opened = [r.getMessage() for r in caplog.records if "circuit" in r.getMessage() or "Redis skipped" in r.getMessage()]
    assert opened, "the dead alias never tripped its own breaker"
    assert all(str(dead_port) in message or "for 127.0.0.1:" in message for message in opened), opened

    samples = scrape(client)
    assert samples[("cache_breaker_open", (("node", ""),))] == 0
    assert samples[("cache_breaker_open", (("node", f"127.0.0.1:{dead_port}"),))] == 1
