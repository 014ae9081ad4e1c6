"""Every operator command answers `--json` with one JSON document on stdout (for scripts and
monitoring), carrying the same numbers as its text output."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.cache.registry import FAMILIES

pytestmark = pytest.mark.django_db(transaction=True)


def run_json(*args) -> object:
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_warm_flush_verify_in_json(characters, make_user, redis_raw):
    make_user("bob@example.com", coins=7)
    warmed = run_json("cache_warm", "--shared-only")
    assert warmed["written"] == 5 and warmed["already_cached"] == 0
    assert warmed["families"]["character"] == {"written": 3, "already_cached": 0, "no_such_row": 0}
    assert run_json("cache_warm", "--shared-only")["already_cached"] == 5

    verified = run_json("cache_verify")
    assert verified["drifted"] == [] and verified["checked"]["character"] == 3 and verified["fixed"] is None

    redis_raw.set("character:luna", b'{"etag":"0000000000000000","data":{"name":"luna"}}', keepttl=True)
    out = StringIO()
    with pytest.raises(CommandError) as caught:  # drift left: exit status 1, as without --json
        call_command("cache_verify", "character", "--json", stdout=out)
    assert caught.value.returncode == 1
    assert json.loads(out.getvalue())["drifted"] == [{"key": "character:luna", "family": "character", "reason": "differs"}]
    assert run_json("cache_verify", "--fix")["fixed"] == 1

    would = run_json("cache_flush", "character", "--dry-run")
    assert would == {"dry_run": True, "families": {"character": 2}, "keys": {}, "total": 2}
    flushed = run_json("cache_flush", "characters:list", "--key", "generation:settings")
    assert flushed["dry_run"] is False and flushed["total"] == 2
    assert flushed["keys"] == {"generation:settings": {"family": "generation:settings", "count": 1}}
    assert redis_raw.exists("characters:list", "generation:settings") == 0


def test_keys_table_in_json():
    table = run_json("cache_keys_table")
    assert [row["family"] for row in table] == list(FAMILIES)
    coins = next(row for row in table if row["family"] == "user:coins")
    assert coins["key"] == "user:coins:{user_id}" and coins["default_ttl"] == 60
    assert coins["ttl_setting"] == "CACHE_TTL_USER_COINS" and coins["invalidated_by"]


def test_stats_renewals_and_stale_generations_in_json(redis_raw):
    assert "families" in json.dumps(run_json("cache_stats"))
    assert run_json("subscriptions_renew") == {"renewed": 0, "failed": 0, "expired": 0, "events_applied": 0}
    assert run_json("generations_fail_stale", "--minutes", "5") == {"failed_and_refunded": 0, "minutes": 5}
