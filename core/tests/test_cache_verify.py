from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.cache import USER_EMAIL
from characters.cache import CHARACTER
from core.cache.api import Payload, fetch

pytestmark = pytest.mark.django_db(transaction=True)


def verify(*args) -> str:
    out = StringIO()
    call_command("cache_verify", *args, stdout=out)
    return out.getvalue()


def verify_drift(*args) -> tuple[str, CommandError]:
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("cache_verify", *args, stdout=out)
    return out.getvalue(), caught.value


@pytest.fixture
def warm(characters, make_user, redis_raw):
    user = make_user("bob@example.com", coins=7)
    call_command("cache_warm", "--users-active-since", "1", stdout=StringIO())
    assert redis_raw.exists(f"user:coins:{user.id}", "character:luna", "user:email:bob@example.com") == 3
    return user


def test_a_fresh_cache_verifies_clean(warm):
    out = verify()
    assert "0 drifted" in out
    assert "character            checked       3" in out
    assert "user:coins           checked       1" in out


def test_a_write_that_skipped_invalidation_is_reported_and_fixed(warm, redis_raw):
    from accounts.models import User
    from characters.models import Character

    # update() sends no signal: exactly the kind of write that leaves the cache stale.
    Character.objects.filter(name="luna").update(display_name="Luna II")
    User.objects.filter(pk=warm.id).update(coin_balance=99)
    out, error = verify_drift()
    assert error.returncode == 1
    assert "DRIFT character:luna (differs)" in out
    assert "DRIFT characters:list (differs)" in out
    assert f"DRIFT user:coins:{warm.id} (differs)" in out
    assert "DRIFT character:rex" not in out
    assert redis_raw.exists("character:luna")  # without --fix nothing is deleted

    out = verify("--fix")  # exit status 0: nothing drifted is left
    assert "3 drifted, 3 deleted" in out
    assert not redis_raw.exists("character:luna", "characters:list", f"user:coins:{warm.id}")
    assert redis_raw.exists("character:rex")
    assert "0 drifted" in verify()
    # The next read caches the current row.
    assert fetch(CHARACTER, name="luna").data()["display_name"] == "Luna II"


def test_a_row_that_is_gone_and_an_unreadable_value_are_drift(warm, redis_raw):
    from characters.models import Character

    Character.objects.filter(name="nyx").update(is_active=False)
    redis_raw.set("character:rex", b"garbage", ex=60)
    out, error = verify_drift("character")
    assert "DRIFT character:nyx (row gone)" in out
    assert "DRIFT character:rex (unreadable)" in out
    assert "characters:list" not in out  # only the named family was checked


def test_a_value_changed_during_the_check_is_not_deleted(warm, redis_raw, monkeypatch):
    from characters.cache import CHARACTER
    from characters.models import Character

    Character.objects.filter(name="luna").update(display_name="Luna II")
    fresh = Payload.of({"display_name": "Luna II"}).pack()
    load = CHARACTER.loader

    def load_then_recache(*, name):
        data = load(name=name)
        if name == "luna":
            redis_raw.set("character:luna", fresh, ex=60)  # a reader re-cached while verify loaded
        return data

    monkeypatch.setitem(CHARACTER.__dict__, "loader", load_then_recache)
    out = verify("character", "--fix")
    assert "0 drifted" in out
    assert redis_raw.get("character:luna") == fresh


def test_hashed_key_parts_are_counted_as_unverifiable(warm, redis_raw):
    fetch(USER_EMAIL, email="we!rd@example.com", user_id=1)
    out = verify("user:email")
    assert "unverifiable 1 (hashed key part)" in out
    assert "user:email           checked       1" in out


def test_unknown_family_is_refused():
    with pytest.raises(CommandError, match="unknown family"):
        verify("nope")
