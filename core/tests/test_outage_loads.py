"""While Redis cannot serve, cached reads come from PostgreSQL: identical loads of one key within
a process share one query, a caller never takes a load that started before it arrived, and a
request costs no more statements than with the cache layer off."""

import copy
import threading
import time

import pytest

from tests.support.harness import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINTS = ["/api/me/coins", "/api/subscription", "/api/characters", "/api/characters/luna",
             "/api/generation/settings", "/api/chat/luna/sessions/s1/messages"]


@pytest.fixture
def redis_down(settings):
    from core.cache.health import HEALTH

    dead = RedisServer()  # never started: connection refused
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = dead.url
    settings.CACHES = caches
    HEALTH.reset()
    yield
    dead.close()


class SlowTable:
    """A loader that takes a while and reads a version that a test can bump as a write would."""

    def __init__(self) -> None:
        self.version = 1
        self.calls = 0
        self.lock = threading.Lock()

    def load(self, *, item: str) -> dict:
        with self.lock:
            self.calls += 1
            seen = self.version
        time.sleep(0.3)
        return {"item": item, "version": seen}


def family_of(table: SlowTable):
    from core.cache.api import KeyFamily

    return KeyFamily(name="outage_test", template="outage_test:{item}", ttl_setting="OUTAGE_TEST_TTL",
                     default_ttl=60, loader=table.load, holds="a test value")


def in_threads(count: int, call, stagger: float = 0.0) -> list:
    from django.db import connection

    results: list = [None] * count

    def run(at: int) -> None:
        try:
            results[at] = call()
        finally:
            connection.close()

    threads = []
    for at in range(count):
        threads.append(threading.Thread(target=run, args=(at,)))
        threads[-1].start()
        time.sleep(stagger)
    for thread in threads:
        thread.join()
    return results


def test_concurrent_loads_of_one_missing_key_share_one_query_while_redis_is_down(redis_down):
    from core.cache.api import fetch_data

    table = SlowTable()
    family = family_of(table)
    results = in_threads(16, lambda: fetch_data(family, item="x"))
    assert results == [{"item": "x", "version": 1}] * 16
    # The first caller's load, then at most one more shared by all who arrived while it ran.
    assert table.calls <= 2, table.calls
    # Another key is not held up by it.
    assert fetch_data(family, item="y") == {"item": "y", "version": 1}


def test_a_caller_never_takes_a_load_that_started_before_it_arrived(redis_down):
    from core.cache.api import fetch_data

    table = SlowTable()
    family = family_of(table)
    first: list = []
    early = threading.Thread(target=lambda: first.append(fetch_data(family, item="x")))
    early.start()
    time.sleep(0.1)  # its load is running, with version 1 read
    table.version = 2  # a write commits and is acknowledged before the next callers arrive
    later = in_threads(4, lambda: fetch_data(family, item="x"))
    early.join()
    assert first == [{"item": "x", "version": 1}]
    assert later == [{"item": "x", "version": 2}] * 4  # never the running load's older value
    assert table.calls == 2  # the four shared the load that started after they arrived


def test_a_request_costs_no_more_statements_during_an_outage_than_with_the_cache_off(
        alice, characters, settings, sql_statements, capsys):
    from core.cache.health import HEALTH

    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json").status_code == 202

    def statements(url: str) -> int:
        alice.get(url)  # the first request of a kind may do one-off work
        with sql_statements() as run:
            response = alice.get(url)
        assert response.status_code == 200, (url, response.content)
        return len(run)

    settings.CACHE_LAYER_ENABLED = False
    off = {url: statements(url) for url in ENDPOINTS}
    settings.CACHE_LAYER_ENABLED = True
    dead = RedisServer()
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = dead.url
    settings.CACHES = caches
    HEALTH.reset()
    try:
        outage = {url: statements(url) for url in ENDPOINTS}
    finally:
        dead.close()
    with capsys.disabled():
        print("\nSQL statements per request, cache layer off vs Redis down:",
              {url: (off[url], outage[url]) for url in ENDPOINTS})
    assert all(outage[url] <= off[url] for url in ENDPOINTS), (off, outage)
