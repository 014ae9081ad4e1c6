"""The eight cached endpoints against the real private Redis and PostgreSQL: the key each one
fills (as `redis-cli` sees it), its TTL, its JSON value, zero SQL on a warm hit (authentication
included), cache headers, and hostile path parts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.cache.api import Payload
from core.cache.registry import FAMILIES

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class Endpoint:
    url: str
    key: str  # {uid} stands for alice's id
    ttl_setting: str
    shared: bool


# The version key each versioned family's values count under (README key table).
VERSION_KEYS = {"subscription:user": "plans:version", "subscription:stats": "plans:version",
                "chat:history": "chat:version:luna"}
ENDPOINTS = [
    Endpoint("/api/me", "user:email:alice@example.com", "CACHE_TTL_USER_EMAIL", False),
    Endpoint("/api/me/coins", "user:coins:{uid}", "CACHE_TTL_USER_COINS", False),
    Endpoint("/api/subscription", "subscription:user:{uid}", "CACHE_TTL_SUBSCRIPTION_USER", False),
    Endpoint("/api/subscription/stats", "subscription:stats:{uid}", "CACHE_TTL_SUBSCRIPTION_STATS", False),
    Endpoint("/api/characters", "characters:list", "CACHE_TTL_CHARACTERS_LIST", True),
    Endpoint("/api/characters/luna", "character:luna", "CACHE_TTL_CHARACTER", True),
    Endpoint("/api/generation/settings", "generation:settings", "CACHE_TTL_GENERATION_SETTINGS", True),
    Endpoint("/api/chat/luna/sessions/s1/messages", "chat:history:{uid}:luna:s1", "CACHE_TTL_CHAT_HISTORY", False),
]


def _seconds_to_midnight() -> float:
    now = timezone.now()
    return (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()


@pytest.fixture
def world(user, alice, characters, redis_server):
    """alice with a chat session 's1' with luna (two messages), then an empty cache."""
    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hello"}, format="json").status_code == 202
    redis_server.wipe()
    return SimpleNamespace(user=user, client=alice)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.url for e in ENDPOINTS])
def test_endpoint_fills_its_key_and_serves_warm_hits_without_sql(
    endpoint, world, redis_raw, django_assert_num_queries
):
    key = endpoint.key.format(uid=world.user.id)
    assert not redis_raw.exists(key)

    first = world.client.get(endpoint.url)
    assert first.status_code == 200, first.content

    # The key reads exactly like the contract, its value is plain JSON {"etag", "data"}; a value
    # of a family with a version key starts with the version it was built under (README).
    raw = redis_raw.get(key)
    assert raw is not None, sorted(redis_raw.scan_iter())
    value = json.loads(raw)
    version = VERSION_KEYS.get(key.split(":")[0] + ":" + key.split(":")[1])
    assert set(value) == {"etag", "data"} | ({"version"} if version else set())
    if version:
        assert value["version"].encode() == redis_raw.get(version)
    assert value["data"] == first.json()
    assert len(value["etag"]) == 16 and int(value["etag"], 16) >= 0

    # 0 < TTL <= the family's TTL (subscription families: capped by period end / end of day).
    ttl = redis_raw.ttl(key)
    cap = next(family.ttl for family in FAMILIES.values() if family.ttl_setting == endpoint.ttl_setting)
    if endpoint.key.startswith("subscription:stats"):
        cap = min(cap, _seconds_to_midnight() + 1)
    assert 0 < ttl <= cap

    # Warm hit: no SQL at all, authentication included.
    with django_assert_num_queries(0):
        again = world.client.get(endpoint.url)
    assert again.status_code == 200
    assert again.content == first.content

    # Per-user bodies are private; shared ones carry the stored ETag.
    if endpoint.shared:
        assert again["ETag"] == f'"{value["etag"]}"'
        assert "private" not in again["Cache-Control"]
    else:
        assert "private" in again["Cache-Control"]
        assert not again.has_header("ETag")


def test_only_the_contract_keys_remain_after_reading_everything(world, redis_raw):
    for endpoint in ENDPOINTS:
        assert world.client.get(endpoint.url).status_code == 200
    keys = {k.decode() for k in redis_raw.scan_iter()}
    # no lease left behind; the version keys beside the values built under them
    assert keys == {e.key.format(uid=world.user.id) for e in ENDPOINTS} | set(VERSION_KEYS.values())
    assert {k.decode() for k in redis_raw.scan_iter(match="user:coins:*")} == {f"user:coins:{world.user.id}"}


@pytest.mark.parametrize("url", [e.url for e in ENDPOINTS if e.shared])
def test_shared_endpoint_answers_if_none_match_with_304_without_sql(url, world, django_assert_num_queries):
    etag = world.client.get(url)["ETag"]
    with django_assert_num_queries(0):
        response = world.client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert world.client.get(url, HTTP_IF_NONE_MATCH=f'"0000000000000000", W/{etag}').status_code == 304
    assert world.client.get(url, HTTP_IF_NONE_MATCH="*").status_code == 304
    assert world.client.get(url, HTTP_IF_NONE_MATCH='"0000000000000000"').status_code == 200


def test_etags_change_after_an_edit(world):
    from characters.models import Character
    from characters.services import character_save
    from generation.services import generation_settings_update

    before = {url: world.client.get(url)["ETag"] for url in ("/api/characters", "/api/characters/luna",
                                                              "/api/generation/settings")}
    luna = Character.objects.get(name="luna")
    luna.description = "Now a poet."
    character_save(character=luna)
    generation_settings_update(max_prompt_length=500)
    for url, etag in before.items():
        response = world.client.get(url, HTTP_IF_NONE_MATCH=etag)
        assert response.status_code == 200, url
        assert response["ETag"] != etag
    assert world.client.get("/api/characters/luna").json()["description"] == "Now a poet."


def test_subscription_ttl_never_outlives_the_period(world, redis_raw):
    from subscriptions.models import Subscription

    Subscription.objects.filter(user_id=world.user.id).update(current_period_end=timezone.now() + timedelta(seconds=20))
    assert world.client.get("/api/subscription").status_code == 200
    assert 0 < redis_raw.ttl(f"subscription:user:{world.user.id}") <= 20


def test_stats_ttl_ends_with_the_day(world, redis_raw, monkeypatch):
    import subscriptions.cache as subscription_cache

    real_now = timezone.now()
    late = real_now.replace(hour=23, minute=59, second=50, microsecond=0)
    monkeypatch.setattr(subscription_cache, "timezone", SimpleNamespace(now=lambda: late))
    assert world.client.get("/api/subscription/stats").status_code == 200
    assert 0 < redis_raw.ttl(f"subscription:stats:{world.user.id}") <= 10


def test_chat_history_holds_only_the_most_recent_messages(user, alice, characters, redis_raw, settings):
    settings.CHAT_HISTORY_CACHED_MESSAGES = 5
    url = "/api/chat/luna/sessions/s1/messages"
    for i in range(4):  # 8 messages: seq 1..8
        assert alice.post(url, {"content": f"m{i}"}, format="json").status_code == 202

    body = alice.get(url).json()
    cached = json.loads(redis_raw.get(f"chat:history:{user.id}:luna:s1"))["data"]
    assert cached == body
    assert [m["seq"] for m in body["messages"]] == [4, 5, 6, 7, 8]
    assert body["has_more"] is True and body["next_before"] == 4

    with CaptureQueriesContext(connection) as queries:
        older = alice.get(url, {"before": body["next_before"]})
    assert older.status_code == 200
    assert any("chat_chatmessage" in q["sql"] for q in queries.captured_queries)  # from the database
    assert [m["seq"] for m in older.json()["messages"]] == [1, 2, 3]
    assert older.json()["has_more"] is False
    assert "private" in older["Cache-Control"]
    assert older.json()["messages"][0]["content"] == "m0"


@pytest.mark.parametrize("url", [
    "/api/characters/a*b",
    "/api/characters/%2A",
    "/api/characters/luna%3Arex",
    "/api/characters/lu%20na",
    "/api/characters/%C3%A9t%C3%A9",
    "/api/characters/" + "a" * 10_000,
    "/api/characters/[a]",
    "/api/characters/lun%3F",
    "/api/chat/luna/sessions/s*1/messages",
    "/api/chat/luna/sessions/s%3A1/messages",
    "/api/chat/luna/sessions/" + "s" * 65 + "/messages",
    "/api/chat/luna/sessions/%E2%9C%93/messages",
    "/api/chat/luna/sessions/nope/messages",
    "/api/chat/" + "x" * 10_000 + "/sessions/s1/messages",
    "/api/chat/a*/sessions/s1/messages",
])
def test_hostile_path_parts_give_404_and_cache_nothing(url, alice, characters, redis_raw):
    response = alice.get(url)
    assert response.status_code == 404, response.content
    assert response["Content-Type"].startswith("application/json")
    keys = {k.decode() for k in redis_raw.scan_iter()}
    # Authentication and (for a chat URL) the real character only (and the version of its chats,
    # started before the load found no session); no lease left behind either.
    assert keys <= {"user:email:alice@example.com", "character:luna", "chat:version:luna"}


def test_unknown_character_is_404_and_another_users_session_is_unknown(world, make_user, client_for, redis_raw):
    assert world.client.get("/api/characters/ghost").status_code == 404
    assert not redis_raw.exists("character:ghost")
    bob = client_for(make_user("bob@example.com"))
    assert bob.get("/api/chat/luna/sessions/s1/messages").status_code == 404
    assert world.client.get("/api/chat/luna/sessions/s1/messages").status_code == 200


@pytest.mark.parametrize("email", ["a*b@example.com", "x?y@example.com", "o'neil{1}@example.com", "UP+tag@Example.COM"])
def test_hostile_emails_get_their_own_safe_key(email, api, plans, redis_raw, django_assert_num_queries):
    from core.cache.keys import key_part, normalize_email

    response = api.post("/api/auth/register", {"email": email, "password": "correct-horse-battery-9"}, format="json")
    assert response.status_code == 201, response.content
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['tokens']['access']}")
    assert api.get("/api/me").json()["email"] == normalize_email(email)
    with django_assert_num_queries(0):
        assert api.get("/api/me").status_code == 200

    keys = [k.decode() for k in redis_raw.scan_iter(match="user:email:*")]
    assert keys == [f"user:email:{key_part(normalize_email(email))}"]
    assert not any(c in keys[0] for c in "*?[]' {}")
    assert json.loads(redis_raw.get(keys[0]))["data"]["email"] == normalize_email(email)


@pytest.mark.parametrize("write", ["generation", "chat"])
def test_writes_check_the_cached_subscription_against_now(write, world, redis_raw):
    """The cached value says active, but its period end has passed: the check compares with now."""
    key = f"subscription:user:{world.user.id}"
    assert world.client.get("/api/subscription").status_code == 200
    value = json.loads(redis_raw.get(key))
    assert value["data"]["status"] == "active"
    value["data"]["current_period_end"] = (timezone.now() - timedelta(seconds=1)).isoformat()
    redis_raw.set(key, json.dumps(value, separators=(",", ":")), ex=60)
    if write == "generation":
        response = world.client.post("/api/generations", {"prompt": "a cat"}, format="json")
    else:
        response = world.client.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json")
    assert response.status_code == 403, response.content
    assert response.json()["code"] == "no_active_subscription"


def test_a_spend_is_decided_by_the_row_not_the_cached_balance(make_user, client_for, redis_raw):
    broke = make_user("broke@example.com", coins=0)
    client = client_for(broke)
    assert client.get("/api/me/coins").json() == {"balance": 0}
    # Whatever the cache claims, the database row decides.
    redis_raw.set(f"user:coins:{broke.id}", Payload.of({"balance": 999}).pack(), ex=60)
    assert client.post("/api/generations", {"prompt": "a cat"}, format="json").status_code == 402
    broke.refresh_from_db()
    assert broke.coin_balance == 0


def test_a_ttl_setting_reaches_redis(user, alice, redis_raw, settings):
    settings.CACHE_TTL_USER_COINS = 7
    settings.CACHE_TTL_USER_EMAIL = 9
    alice.get("/api/me/coins")
    assert 0 < redis_raw.ttl(f"user:coins:{user.id}") <= 7
    assert 0 < redis_raw.ttl("user:email:alice@example.com") <= 9


@pytest.mark.parametrize("url", ["/api/me/coins/history", "/api/generations", "/api/chat/luna/sessions",
                                 "/api/chat/luna/sessions/s1/messages?before=3", "/api/characters/ghost"])
def test_other_per_user_responses_are_private_too(url, world):
    response = world.client.get(url)
    assert "private" in response["Cache-Control"], url


def test_an_anonymous_public_response_is_left_alone(api, plans):
    response = api.get("/api/plans")
    assert response.status_code == 200
    assert "private" not in response.get("Cache-Control", "")
