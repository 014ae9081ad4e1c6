from datetime import timedelta
from io import StringIO

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)


def warm(*args) -> str:
    out = StringIO()
    call_command("cache_warm", *args, stdout=out)
    return out.getvalue()


def test_warm_fills_the_shared_families_through_the_read_path(characters, redis_raw):
    out = warm()
    assert "5 key(s) written, 0 already cached" in out
    names = [c["name"] for c in orjson.loads(redis_raw.get("characters:list"))["data"]]
    assert names == ["luna", "rex", "nyx"]
    assert orjson.loads(redis_raw.get("character:luna"))["data"]["display_name"] == "Luna"
    assert orjson.loads(redis_raw.get("generation:settings"))["data"]["steps"] == 30
    # The family's TTL applies, and no lease is left behind.
    assert 1790 < redis_raw.ttl("character:nyx") <= 1800
    assert 3590 < redis_raw.ttl("generation:settings") <= 3600
    assert list(redis_raw.scan_iter(match="lease:*")) == []
    # Plain text in a pipe: no terminal escape codes from the progress bar.
    assert "\x1b[" not in out


def test_warm_is_idempotent(characters, redis_raw):
    warm()
    before = redis_raw.get("character:luna")
    out = warm()
    assert "0 key(s) written, 5 already cached" in out
    assert redis_raw.get("character:luna") == before


def test_warm_skips_inactive_characters_and_warms_only_named_families(characters, redis_raw):
    from characters.models import Character

    Character.objects.filter(name="rex").update(is_active=False)
    out = warm("character")
    assert redis_raw.exists("character:luna", "character:nyx") == 2
    assert not redis_raw.exists("character:rex")
    assert not redis_raw.exists("characters:list")
    assert not redis_raw.exists("generation:settings")
    assert "2 key(s) written" in out


def test_warm_per_user_families_only_for_recently_active_users(make_user, characters, redis_raw):
    from accounts.models import CoinLedgerEntry
    from chat.models import ChatSession

    active = make_user("active@example.com", coins=5)
    idle = make_user("idle@example.com", coins=5)
    CoinLedgerEntry.objects.filter(user=idle).update(created_at=timezone.now() - timedelta(days=30))
    ChatSession.objects.create(user=active, character=characters["luna"], session_id="s1")

    out = warm("--users-active-since", "7")
    for key in (f"user:coins:{active.id}", f"subscription:user:{active.id}", f"subscription:stats:{active.id}",
                "user:email:active@example.com", f"chat:history:{active.id}:luna:s1", "characters:list"):
        assert redis_raw.exists(key), key
    assert orjson.loads(redis_raw.get(f"user:coins:{active.id}"))["data"] == {"balance": 5}
    assert not redis_raw.exists(f"user:coins:{idle.id}")
    assert not redis_raw.exists("user:email:idle@example.com")
    assert "user:coins" in out


def test_per_user_family_needs_the_activity_window(characters, redis_raw):
    with pytest.raises(CommandError, match="--users-active-since"):
        warm("user:coins")
    assert redis_raw.dbsize() == 0


def test_unknown_family_is_refused(characters, redis_raw):
    with pytest.raises(CommandError, match="unknown family nope"):
        warm("character", "nope")
    assert redis_raw.dbsize() == 0


def test_warm_fails_loudly_when_redis_is_down(characters, redis_server):
    redis_server.stop()
    try:
        with pytest.raises(CommandError, match="Redis is unreachable"):
            warm()
    finally:
        redis_server.start()


def test_progress_moves_one_key_at_a_time(characters, redis_raw, monkeypatch):
    """The bar advances as each key is filled, not in jumps of a 500-key batch after it."""
    from core.cache.ops import warm as warm_ops
    from core.cache.registry import FAMILIES, shared_families

    events: list = []
    real_fetch = warm_ops.fetch

    def fetch(family, **parts):
        events.append(("fetch", family.name))
        return real_fetch(family, **parts)

    monkeypatch.setattr(warm_ops, "fetch", fetch)
    redis_raw.set("character:rex", b'{"etag":"0000000000000000","data":{}}', ex=60)  # already cached
    targets = warm_ops.warm_targets([FAMILIES[name] for name in shared_families()])
    warm_ops.warm(targets, progress=lambda n: events.append(("advance", n)))
    steps = [n for kind, n in events if kind == "advance"]
    assert steps == [1] * len(targets) == [1] * 5
    # Every fetch is followed by its step before the next fetch starts.
    kinds = [kind for kind, _ in events]
    assert all(kinds[i + 1] == "advance" for i, kind in enumerate(kinds) if kind == "fetch")
