"""A warm cached GET costs one Redis round trip: authentication reads the user's key and the
endpoint's keys together (MGET), and the view serves what was read."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINTS = [
    "/api/me/coins", "/api/subscription", "/api/subscription/stats", "/api/characters",
    "/api/characters/luna", "/api/generation/settings", "/api/generations/1", "/api/chat/luna/sessions/s1/messages",
]


def concrete(url: str, client) -> str:
    """The URL with a generation of this client's user in place of the example id."""
    if url != "/api/generations/1":
        return url
    return f"/api/generations/{client.post('/api/generations', {'prompt': 'a cat'}, format='json').json()['id']}"


def test_every_view_that_names_its_reads_is_checked_here():
    """An endpoint whose cache_reads and selectors drift apart still answers, with a second round
    trip: only the test above notices, so every such view must be in ENDPOINTS."""
    from django.urls import get_resolver, resolve

    from core.cache.readahead import url_patterns

    declared = {view for pattern, _ in url_patterns(get_resolver())
                if getattr(view := getattr(pattern.callback, "view_class", None), "cache_reads", ())}
    checked = {resolve(url).func.view_class for url in ENDPOINTS}
    assert declared == checked, declared ^ checked
    assert len(declared) == len(ENDPOINTS)


def redis_calls(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_warm_cached_get_is_one_redis_round_trip(alice, characters, redis_raw, url, django_assert_num_queries):
    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json").status_code == 202
    url = concrete(url, alice)
    first = alice.get(url)
    assert first.status_code == 200
    redis_raw.config_resetstat()  # our private server: its counters are ours to reset
    with django_assert_num_queries(0):
        again = alice.get(url)
    assert again.status_code == 200
    assert again.content == first.content
    calls = redis_calls(redis_raw)
    calls.pop("config|resetstat", None)
    calls.pop("info", None)
    assert calls == {"mget": 1}, calls


def test_read_ahead_is_skipped_for_older_chat_pages_and_writes(alice, characters, redis_raw):
    url = "/api/chat/luna/sessions/s1/messages"
    for _ in range(3):
        alice.post(url, {"content": "hi"}, format="json")
    redis_raw.config_resetstat()
    assert alice.get(url + "?before=3&limit=1").json()["messages"][0]["seq"] == 2
    assert "mget" not in redis_calls(redis_raw)


def test_read_ahead_with_redis_down_falls_back_to_the_database(alice, characters, redis_server, settings):
    import copy

    from core.cache.health import HEALTH
    from tests.support.harness import RedisServer

    dead = RedisServer()  # never started: connection refused
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = dead.url
    settings.CACHES = caches
    HEALTH.reset()
    for url in ENDPOINTS[:-1]:
        assert alice.get(concrete(url, alice)).status_code == 200, url
    dead.close()
