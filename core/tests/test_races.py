"""Concurrency: stampedes, eviction of any key (leases included), and randomised readers and
writers; afterwards every cached value equals the database."""

from __future__ import annotations

import random
import threading
import time

import orjson
import pytest

from accounts.cache import USER_COINS, USER_EMAIL
from characters.cache import CHARACTER, CHARACTERS_LIST
from chat.cache import CHAT_HISTORY
from core.cache.registry import FAMILIES
from generation.cache import GENERATION_SETTINGS
from subscriptions.cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER
from tests.support.harness import RedisServer, cache_on_own_redis, run_concurrently

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.parametrize(
    ("url", "family"),
    [
        ("/api/characters", "characters:list"),
        ("/api/characters/luna", "character"),
        ("/api/generation/settings", "generation:settings"),
    ],
)
def test_stampede_on_a_missing_shared_key_queries_the_database_once(
    monkeypatch, settings, client_for, user, characters, url, family
):
    """50 requests miss one key together, and the database is slow: the loader is held until the
    other 49 are all waiting for it and each has waited longer than the old 0.5 s give-up point.
    Still one query. (Lease extension under a query slower than the lease: test_store.)"""
    from core.cache.hooks import HOOKS

    settings.CACHE_LEASE_WAIT = 60  # the safety net stays out of the way on a busy machine
    clients = [client_for(user) for _ in range(50)]
    clients[0].get("/api/me")  # auth is warm: the only recompute left is the key under test
    original = FAMILIES[family].loader
    waited: dict[int, float] = {}
    lock = threading.Lock()
    long_enough = threading.Event()
    calls: list = []

    def pause(delay):
        time.sleep(delay)
        with lock:
            waited[threading.get_ident()] = waited.get(threading.get_ident(), 0.0) + delay
            if len(waited) == 49 and min(waited.values()) >= 0.6:
                long_enough.set()

    def slow_loader(**kwargs):
        calls.append(kwargs)
        assert long_enough.wait(timeout=60), waited
        return original(**kwargs)

    monkeypatch.setattr(HOOKS, "lease_wait", pause)
    monkeypatch.setitem(FAMILIES[family].__dict__, "loader", slow_loader)

    def hit(i):
        response = clients[i].get(url)
        return response.status_code, response.content

    results = run_concurrently(50, hit)
    assert all(not isinstance(r, Exception) for r in results), [r for r in results if isinstance(r, Exception)]
    assert {status for status, _ in results} == {200}
    assert len({body for _, body in results}) == 1
    assert len(calls) == 1, len(calls)


@pytest.fixture
def tiny_redis(settings):
    """A Redis with a tiny maxmemory and allkeys-lru: any key can vanish at any time."""
    with cache_on_own_redis(settings, "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru") as server:
        yield server


def fill(server: RedisServer, count: int, seed: int) -> None:
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.set(f"filler:{seed}:{i}", b"x" * 1024)
    pipe.execute()


def test_eviction_costs_at_most_a_miss_never_a_stale_value(tiny_redis, make_user, client_for, characters):
    from accounts.models import User
    from characters.models import Character
    from characters.services import character_save

    user = make_user("evict@example.com", coins=500, plan="pro")
    client = client_for(user)
    rng = random.Random(7)
    for round_ in range(60):
        fill(tiny_redis, 300, round_)  # pushes memory over the limit: LRU evicts whatever it likes
        action = rng.choice(["spend", "edit", "read"])
        if action == "spend":
            assert client.post("/api/generations", {"prompt": f"p{round_}"}, format="json").status_code == 202
        elif action == "edit":
            luna = Character.objects.get(name="luna")
            luna.description = f"edit {round_}"
            character_save(character=luna)
        balance = User.objects.get(pk=user.pk).coin_balance
        assert client.get("/api/me/coins").json() == {"balance": balance}
        description = Character.objects.get(name="luna").description
        assert client.get("/api/characters/luna").json()["description"] == description
        assert next(c for c in client.get("/api/characters").json() if c["name"] == "luna")["description"] == description
    assert tiny_redis.client().info("stats")["evicted_keys"] > 0


def test_an_evicted_lease_stops_the_populate(monkeypatch, alice, user, redis_raw):
    """Losing the lease between the database read and the store means: do not store."""

    original = USER_COINS.loader

    def evicting(**kwargs):
        data = original(**kwargs)
        redis_raw.delete(f"lease:user:coins:{user.id}")  # as if LRU took it
        return data

    monkeypatch.setitem(USER_COINS.__dict__, "loader", evicting)
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert not redis_raw.exists(f"user:coins:{user.id}")


def cached_data(client, key: str):
    raw = client.get(key)
    return None if raw is None else orjson.loads(raw)["data"]


def test_randomised_readers_and_writers_leave_every_cached_key_equal_to_the_database(
    make_user, client_for, characters, redis_raw
):
    from characters.models import Character
    from characters.services import character_save
    from generation.services import generation_settings_update

    users = [make_user(f"race{i}@example.com", coins=10_000, plan="pro") for i in range(3)]
    clients = [client_for(u) for u in users]
    names = ["luna", "rex"]
    deadline = time.monotonic() + 4.0

    def worker(i: int):
        rng = random.Random(i)
        client = clients[i % len(clients)]
        statuses = []
        while time.monotonic() < deadline:
            action = rng.random()
            if action < 0.45:
                url = rng.choice(["/api/me", "/api/me/coins", "/api/subscription", "/api/subscription/stats",
                                  "/api/characters", f"/api/characters/{rng.choice(names)}",
                                  "/api/generation/settings", f"/api/chat/luna/sessions/s{i % 2}/messages"])
                statuses.append(client.get(url).status_code)
            elif action < 0.6:
                statuses.append(client.post("/api/generations", {"prompt": "x"}, format="json").status_code)
            elif action < 0.75:
                statuses.append(client.post(f"/api/chat/luna/sessions/s{i % 2}/messages", {"content": "hey"},
                                            format="json").status_code)
            elif action < 0.88:
                character = Character.objects.get(name=rng.choice(names))
                character.description = f"d{rng.random()}"
                character_save(character=character)
            else:
                generation_settings_update(guidance=round(rng.uniform(1, 20), 3))
        return statuses

    results = run_concurrently(6, worker)
    assert all(not isinstance(r, Exception) for r in results), [r for r in results if isinstance(r, Exception)]
    statuses = {s for r in results for s in r}
    assert statuses <= {200, 201, 202, 404}, statuses  # 404: a history read before the session's first message

    # Quiescence: every key that is cached must equal what the database says now.
    checked = 0
    for u in users:
        for family, parts in [
            (USER_COINS, {"user_id": u.id}),
            (USER_EMAIL, {"email": u.email, "user_id": u.id}),
            (SUBSCRIPTION_USER, {"user_id": u.id}),
            (SUBSCRIPTION_STATS, {"user_id": u.id}),
            *[(CHAT_HISTORY, {"user_id": u.id, "character": "luna", "session": f"s{s}"}) for s in (0, 1)],
        ]:
            value = cached_data(redis_raw, family.key(**parts))
            if value is not None:
                checked += 1
                assert value == family.load(**parts), family.name
    for family, parts in [(CHARACTERS_LIST, {}), (GENERATION_SETTINGS, {}),
                          *[(CHARACTER, {"name": n}) for n in names]]:
        value = cached_data(redis_raw, family.key(**parts))
        if value is not None:
            checked += 1
            assert value == family.load(**parts), family.name
    assert checked >= 5
