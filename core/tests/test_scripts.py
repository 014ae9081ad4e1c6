"""The engine's Lua scripts run by SHA (EVALSHA), and are loaded again whenever Redis has lost them
(a SCRIPT FLUSH, a restart, a failover to a server that never saw them): on a single call, and on
every command of a raw batch (the amendment, warm-up's fill)."""

from __future__ import annotations

import json

import pytest

from accounts.cache import USER_COINS, coins_set_to, coins_target
from core.cache.api import amend_after_commit, fetch, invalidate, warm
from tests.support.harness import cache_on_own_redis

pytestmark = pytest.mark.django_db(transaction=True)


def cached(client, key: str):
    raw = client.get(key)
    return None if raw is None else json.loads(raw)["data"]


def script_calls(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("eval", "evalsha")}


def set_balance(user, balance: int) -> None:
    from accounts.models import User

    User.objects.filter(pk=user.id).update(coin_balance=balance)


def test_scripts_are_sent_by_sha_not_by_text(user, redis_raw):
    redis_raw.config_resetstat()
    fetch(USER_COINS, user_id=user.id)
    calls = script_calls(redis_raw)
    assert calls["eval"] == 0 and calls["evalsha"] >= 1
    assert cached(redis_raw, f"user:coins:{user.id}") == {"balance": 30}


def test_a_fill_after_script_flush_loads_the_script_again(user, redis_raw):
    key = f"user:coins:{user.id}"
    fetch(USER_COINS, user_id=user.id)
    redis_raw.script_flush()
    set_balance(user, 41)
    invalidate((USER_COINS, {"user_id": user.id}))
    assert fetch(USER_COINS, user_id=user.id).data() == {"balance": 41}
    assert cached(redis_raw, key) == {"balance": 41}  # stored: the script was loaded and run
    assert not redis_raw.exists(f"lease:{key}")


def test_an_amendment_after_script_flush_still_stores_its_value(user, redis_raw):
    """Both of its batches (lease-and-read on entry, store at commit) go through the raw pipeline."""
    key = f"user:coins:{user.id}"
    fetch(USER_COINS, user_id=user.id)
    redis_raw.script_flush()
    with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
        assert redis_raw.exists(f"lease:{key}")
        redis_raw.script_flush()  # lost again between the two batches
        set_balance(user, 77)
        coins.change(coins_set_to(77))
    assert cached(redis_raw, key) == {"balance": 77}
    assert not redis_raw.exists(f"lease:{key}")


def test_a_bulk_fill_after_script_flush_stores_every_key(make_user, redis_raw):
    users = [make_user(coins=n) for n in (3, 4, 5)]
    redis_raw.script_flush()
    result = warm([(USER_COINS, {"user_id": u.id}) for u in users])
    assert result.written == {"user:coins": 3}
    assert [cached(redis_raw, f"user:coins:{u.id}") for u in users] == [{"balance": n} for n in (3, 4, 5)]


@pytest.fixture
def restartable(settings):
    with cache_on_own_redis(settings) as server:
        yield server


def test_a_restarted_redis_gets_the_scripts_again(user, restartable):
    key = f"user:coins:{user.id}"
    fetch(USER_COINS, user_id=user.id)
    with amend_after_commit(coins_target(user_id=user.id)):
        pass
    restartable.restart()  # an empty script cache, as after a failover to a fresh server
    client = restartable.client()
    try:
        fetch(USER_COINS, user_id=user.id)  # the first read over the new connection syncs first
        set_balance(user, 52)
        invalidate((USER_COINS, {"user_id": user.id}))
        assert fetch(USER_COINS, user_id=user.id).data() == {"balance": 52}
        assert cached(client, key) == {"balance": 52}
        with amend_after_commit(coins_target(user_id=user.id)) as (coins,):
            set_balance(user, 60)
            coins.change(coins_set_to(60))
        assert cached(client, key) == {"balance": 60}
        assert script_calls(client)["eval"] == 0
    finally:
        client.close()


def test_every_script_file_ships_in_the_image():
    """The image is ``COPY . .`` minus .dockerignore: no pattern there may drop a .lua file."""
    from fnmatch import fnmatch
    from pathlib import Path

    from django.conf import settings

    from core.cache.scripts import BY_SHA

    root = Path(settings.BASE_DIR)
    ignored = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    files = sorted((root / "core" / "cache" / "lua").glob("*.lua"))
    assert {f"{script.name}.lua" for script in BY_SHA.values()} == {path.name for path in files}
    for path in files:
        relative = path.relative_to(root).as_posix()
        assert not any(fnmatch(relative, pattern) or relative.startswith(pattern.rstrip("/") + "/")
                       for pattern in ignored), relative
    assert "COPY . ." in (root / "Dockerfile").read_text()
