from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.cache.ops import common as common_ops
from core.cache.registry import FAMILIES

# Keys of every family, and keys that only look similar: another app's, or a shape no family has.
OURS = {
    "subscription:user": ["subscription:user:1", "subscription:user:2"],
    "subscription:stats": ["subscription:stats:1"],
    "user:email": ["user:email:a@example.com"],
    "user:coins": ["user:coins:1", "user:coins:2", "user:coins:3"],
    "characters:list": ["characters:list"],
    "character": ["character:luna", "character:rex"],
    "generation:settings": ["generation:settings"],
    "chat:history": ["chat:history:1:luna:s1"],
}
FOREIGN = ["otherapp:character:luna", "character:luna:extra", "characters:listing", "session:abc", "lease-ish"]


@pytest.fixture
def loaded(redis_raw):
    for keys in OURS.values():
        for key in keys:
            redis_raw.set(key, b'{"etag":"0000000000000000","data":1}', ex=600)
    for key in FOREIGN:
        redis_raw.set(key, b"theirs")
    redis_raw.set("lease:character:luna", b"token", px=2000)
    return redis_raw


def flush(*args) -> str:
    out = StringIO()
    call_command("cache_flush", *args, stdout=out)
    return out.getvalue()


def test_flush_one_family_deletes_exactly_its_keys_and_their_leases(loaded):
    out = flush("character")
    assert "character            deleted       2" in out
    assert not loaded.exists("character:luna", "character:rex", "lease:character:luna")
    # Same prefix, wrong shape, or another app: untouched.
    assert loaded.exists(*FOREIGN) == len(FOREIGN)
    assert loaded.exists("characters:list", "user:coins:1") == 2


def test_flush_several_families_prints_counts_per_family(loaded):
    out = flush("user:coins", "subscription:user")
    assert "user:coins           deleted       3" in out
    assert "subscription:user    deleted       2" in out
    assert "deleted 5 key(s)" in out
    assert loaded.exists("subscription:stats:1")


def test_dry_run_counts_and_deletes_nothing(loaded):
    size = loaded.dbsize()
    out = flush("--all", "--dry-run")
    assert "would delete 12 key(s)" in out
    assert loaded.dbsize() == size


def test_all_asks_first_and_refuses_without_an_answer(loaded, monkeypatch):
    def no_terminal(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    size = loaded.dbsize()
    with pytest.raises(CommandError, match="aborted"):
        flush("--all")
    assert loaded.dbsize() == size

    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(CommandError, match="aborted"):
        flush("--all")
    assert loaded.dbsize() == size


def test_all_after_yes_deletes_every_family_and_nothing_else(loaded, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    out = flush("--all")
    assert "deleted 12 key(s)" in out
    for name in FAMILIES:
        assert f"{name:<20} deleted" in out
    remaining = sorted(k.decode() for k in loaded.scan_iter())
    assert remaining == sorted(FOREIGN)


def test_yes_skips_the_question(loaded, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked"))
    flush("--all", "--yes")
    assert sorted(k.decode() for k in loaded.scan_iter()) == sorted(FOREIGN)


def test_flush_one_key(loaded):
    out = flush("--key", "character:luna")
    assert "character            deleted       1  (character:luna)" in out
    assert not loaded.exists("character:luna", "lease:character:luna")
    assert loaded.exists("character:rex")


def test_a_key_of_no_family_is_refused(loaded):
    with pytest.raises(CommandError, match="not a key of any cache family"):
        flush("--key", "session:abc")
    assert loaded.exists("session:abc")


@pytest.mark.parametrize("args, message", [
    ((), "say what to flush"),
    (("nope",), "unknown family nope"),
    (("character", "--all"), "not both"),
])
def test_bad_arguments_change_nothing(loaded, args, message):
    size = loaded.dbsize()
    with pytest.raises(CommandError, match=message):
        flush(*args)
    assert loaded.dbsize() == size


def test_namespace_limits_the_flush_to_this_deployment(redis_raw, settings):
    # A glob character in the namespace must match literally, not widen the pattern.
    settings.CACHE_NAMESPACE = "blue*:"
    for key in ("blue*:character:luna", "blueX:character:luna", "character:luna", "green:character:luna"):
        redis_raw.set(key, b"x")
    assert common_ops.scan_pattern(FAMILIES["character"]) == "blue\\*:character:*"
    out = flush("character")
    assert "character            deleted       1" in out
    assert sorted(k.decode() for k in redis_raw.scan_iter()) == [
        "blueX:character:luna", "character:luna", "green:character:luna"]


def test_flush_fails_loudly_when_redis_is_down(redis_server):
    redis_server.stop()
    try:
        with pytest.raises(CommandError, match="Redis is unreachable"):
            flush("character")
    finally:
        redis_server.start()
