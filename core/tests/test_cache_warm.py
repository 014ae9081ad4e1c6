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


def test_by_default_per_user_keys_of_users_active_within_each_familys_ttl(make_user, characters, redis_raw):
    """A user last seen between the coins TTL and the subscription TTL ago gets the subscription
    key back (their cached one would still be there) but not the coins key (it would have expired
    unread); a user last seen days ago gets nothing."""
    from accounts.models import CoinLedgerEntry
    from core.cache.registry import FAMILIES

    coins_ttl, subscription_ttl = FAMILIES["user:coins"].ttl, FAMILIES["subscription:user"].ttl
    assert coins_ttl < subscription_ttl
    now = make_user("now@example.com", coins=5)
    earlier = make_user("earlier@example.com", coins=5)
    gone = make_user("gone@example.com", coins=5)
    CoinLedgerEntry.objects.filter(user=earlier).update(
        created_at=timezone.now() - timedelta(seconds=(coins_ttl + subscription_ttl) / 2))
    CoinLedgerEntry.objects.filter(user=gone).update(created_at=timezone.now() - timedelta(days=2))

    warm()
    assert redis_raw.exists("characters:list", f"user:coins:{now.id}", f"subscription:user:{now.id}") == 3
    assert redis_raw.exists(f"subscription:user:{earlier.id}")
    assert not redis_raw.exists(f"user:coins:{earlier.id}")
    assert not any(redis_raw.scan_iter(match=f"*:{gone.id}"))


def test_shared_only_leaves_the_per_user_families_alone(make_user, characters, redis_raw):
    user = make_user("now@example.com", coins=5)
    out = warm("--shared-only")
    assert "5 key(s) written" in out
    assert not redis_raw.exists(f"user:coins:{user.id}")
    with pytest.raises(CommandError, match="per user"):
        warm("--shared-only", "user:coins")


def test_rate_paces_the_warm_up(make_user, characters, redis_raw):
    for n in range(4):
        make_user(f"u{n}@example.com", coins=5)
    from core.cache.ops.warm import warm as warm_keys
    from core.cache.ops.warm import warm_targets
    from core.cache.registry import FAMILIES

    targets = warm_targets(FAMILIES.values())
    assert len(targets) >= 12
    paced = warm_keys(targets, rate=len(targets) / 1.5)  # a second and a half's worth of keys
    assert paced.seconds >= 1.4
    assert paced.total_written == len(targets) - sum(paced.skipped.values())
    redis_raw.flushdb()
    assert warm_keys(targets, rate=0).seconds < 1.4


def test_bad_rate_is_refused(characters, redis_raw):
    with pytest.raises(CommandError, match="--rate"):
        warm("--rate", "-1")
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

    def observed(family):
        load = family.loader
        return lambda **parts: events.append(("load", family.name)) or load(**parts)

    for name in shared_families():
        monkeypatch.setitem(FAMILIES[name].__dict__, "loader", observed(FAMILIES[name]))
    redis_raw.set("character:rex", b'{"etag":"0000000000000000","data":{}}', ex=60)  # already cached
    targets = warm_ops.warm_targets([FAMILIES[name] for name in shared_families()])
    warm_ops.warm(targets, progress=lambda n: events.append(("advance", n)))
    steps = [n for kind, n in events if kind == "advance"]
    assert steps == [1] * len(targets) == [1] * 5
    # Every load is followed by its step before the next load starts.
    kinds = [kind for kind, _ in events]
    assert kinds.count("load") == 4
    assert all(kinds[i + 1] == "advance" for i, kind in enumerate(kinds) if kind == "load")


# --- bulk loaders: a batch of keys in a few queries ----------------------------------------------


@pytest.fixture
def active_users(make_user, characters, settings):
    """Users active this week, in the states the per-user values distinguish, with chat sessions."""
    from chat.models import ChatMessage, ChatSession
    from subscriptions.models import DailyUsage, Subscription

    settings.CHAT_HISTORY_CACHED_MESSAGES = 3

    def chatting(user, name, count):
        chat = ChatSession.objects.create(user=user, character=characters["luna"], session_id=name, last_seq=count)
        ChatMessage.objects.bulk_create(ChatMessage(session=chat, user=user, seq=seq, role="user", content=f"#{seq}")
                                        for seq in range(1, count + 1))

    def make(count: int) -> list:
        users = [make_user(coins=5 + n, plan="plus" if n % 3 == 1 else "free") for n in range(count)]
        Subscription.objects.filter(user=users[0]).delete()
        DailyUsage.objects.create(user=users[-1], day=timezone.now().date(), generations=1, messages=2)
        for n, user in enumerate(users):
            chatting(user, "s", 2 + 3 * n)  # from under the limit to well over it
        chatting(users[0], "empty", 0)
        return users

    return make


def user_targets(since: int = 7):
    from core.cache.ops.warm import warm_targets
    from core.cache.registry import FAMILIES, user_families

    return warm_targets([FAMILIES[name] for name in user_families()], users_active_since=since)


def cached(redis_raw) -> dict[str, tuple[bytes, int]]:
    return {key.decode(): (redis_raw.get(key), redis_raw.ttl(key)) for key in redis_raw.scan_iter()}


def _built_under_their_versions(values: dict[str, tuple[bytes, int]]) -> dict[str, bytes]:
    """The values with the versions they carry checked against their version keys and taken off
    (each run starts its own random versions)."""
    from core.cache.api import Payload
    from core.cache.registry import family_of

    out = {}
    for key, (raw, _) in values.items():
        family = family_of(key)
        if family is None:
            continue
        payload = Payload.unpack(raw)
        if family.version is not None:
            assert payload.stamp == values[family.version.key(**family.parts_of(key))][0], key
        out[key] = Payload(payload.body, payload.etag).pack()
    return out


def test_bulk_warm_writes_what_the_per_key_path_writes(active_users, redis_raw, monkeypatch):
    from core.cache.ops.warm import warm as warm_ops
    from core.cache.registry import FAMILIES

    active_users(5)
    targets = user_targets()
    bulk = warm_ops(targets)
    by_bulk = cached(redis_raw)
    redis_raw.flushdb()  # the test's private server
    for family in FAMILIES.values():
        monkeypatch.setitem(family.__dict__, "bulk_loader", None)
    one_by_one = warm_ops(targets)
    by_fetch = cached(redis_raw)

    # no lease left behind either; beside the keys, the versions they were built under
    assert len(by_bulk) == len(targets) + 2 == 5 * 4 + 6 + 2
    assert {"plans:version", "chat:version:luna"} <= set(by_bulk)
    assert _built_under_their_versions(by_bulk) == _built_under_their_versions(by_fetch)
    assert all(abs(ttl - by_fetch[key][1]) <= 2 for key, (_, ttl) in by_bulk.items())
    assert bulk.written == one_by_one.written and bulk.skipped == one_by_one.skipped == {}


def test_bulk_warm_runs_a_few_queries_per_batch_not_per_key(active_users, redis_raw, sql_statements):
    from core.cache.health import HEALTH
    from core.cache.ops.warm import warm as warm_ops

    users = active_users(3)
    HEALTH.ready()  # the first sync's query, out of the count
    targets = user_targets()
    with sql_statements() as few:
        warm_ops(targets)
    redis_raw.flushdb()
    active_users(9)
    targets = [target for target in user_targets() if target[1]["user_id"] not in {u.id for u in users}]
    HEALTH.ready()  # a sync the flush may have made due (one query), out of the count as above
    with sql_statements() as many:
        result = warm_ops(targets)
    assert result.total_written == len(targets) == 9 * 4 + 10
    # user:email 1, user:coins 1, subscription:user 1, subscription:stats 3, chat:history 2
    assert len(few) == len(many) == 8


def test_bulk_warm_counts_written_already_cached_and_skipped(active_users, redis_raw):
    from accounts.cache import USER_COINS
    from chat.cache import CHAT_HISTORY
    from core.cache.api import fetch
    from core.cache.ops.warm import warm as warm_ops

    first, second = active_users(2)
    fetch(USER_COINS, user_id=first.id)
    targets = [*user_targets(), (CHAT_HISTORY, {"user_id": first.id, "character": "luna", "session": "gone"})]
    steps: list[int] = []
    result = warm_ops(targets, progress=steps.append)
    assert result.written == {"user:email": 2, "user:coins": 1, "subscription:user": 2, "subscription:stats": 2,
                              "chat:history": 3}
    assert result.already == {"user:coins": 1}
    assert result.skipped == {"chat:history": 1}
    assert sum(steps) == len(targets)
    assert not redis_raw.exists(f"chat:history:{first.id}:luna:gone")
    assert list(redis_raw.scan_iter(match="lease:*")) == []

    again = warm_ops(targets)
    assert again.total_written == 0 and sum(again.already.values()) == len(targets) - 1
    assert again.skipped == {"chat:history": 1}


def test_a_write_during_the_bulk_load_leaves_no_stale_value(active_users, redis_raw, monkeypatch):
    """The stale-set race of test_store, for a batch: a write commits and invalidates after the
    bulk load read the old rows and before they are stored; that key stays empty, the rest fill."""
    from accounts.cache import USER_COINS
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply
    from core.cache.api import fetch_data
    from core.cache.ops.warm import warm as warm_ops

    raced, other = active_users(2)
    real = USER_COINS.bulk_loader

    def reader_then_writer(parts_list):
        old = real(parts_list)  # the warm-up has the old rows in hand
        coins_apply(user_id=raced.id, amount=-3, reason=CoinLedgerEntry.Reason.SPEND)  # commits, invalidates
        return old

    monkeypatch.setitem(USER_COINS.__dict__, "bulk_loader", reader_then_writer)
    result = warm_ops([(USER_COINS, {"user_id": raced.id}), (USER_COINS, {"user_id": other.id})])
    assert result.written == {"user:coins": 1}
    assert redis_raw.get(f"user:coins:{raced.id}") is None  # the old balance, 5, was not stored
    assert orjson.loads(redis_raw.get(f"user:coins:{other.id}"))["data"] == {"balance": 6}
    assert list(redis_raw.scan_iter(match="lease:*")) == []
    assert fetch_data(USER_COINS, user_id=raced.id) == {"balance": 2}


def test_a_key_a_reader_is_loading_is_left_to_fetch(active_users, redis_raw, monkeypatch):
    """The bulk path does not take over a lease: that key goes through fetch, which waits for the
    holder's value (here the holder dies, and fetch takes over when its lease expires)."""
    from accounts.cache import USER_COINS
    from core.cache.ops import warm as warm_ops

    busy, free = active_users(2)
    redis_raw.set(f"lease:user:coins:{busy.id}", "someone-else", px=200)
    loaded_one_by_one = []  # fetch's way: the family's loader, one key at a time
    load = USER_COINS.loader
    monkeypatch.setitem(USER_COINS.__dict__, "loader",
                        lambda **parts: loaded_one_by_one.append(parts) or load(**parts))
    result = warm_ops.warm([(USER_COINS, {"user_id": busy.id}), (USER_COINS, {"user_id": free.id})])
    assert loaded_one_by_one == [{"user_id": busy.id}]
    assert result.written == {"user:coins": 2}
    assert orjson.loads(redis_raw.get(f"user:coins:{busy.id}"))["data"] == {"balance": 5}
    assert list(redis_raw.scan_iter(match="lease:*")) == []


def test_a_failing_bulk_load_releases_its_leases(active_users, redis_raw, monkeypatch):
    from core.cache.ops.warm import warm as warm_ops
    from subscriptions.cache import SUBSCRIPTION_STATS

    users = active_users(2)

    def broken(parts_list):
        raise RuntimeError("database went away")

    monkeypatch.setitem(SUBSCRIPTION_STATS.__dict__, "bulk_loader", broken)
    with pytest.raises(RuntimeError, match="went away"):
        warm_ops([(SUBSCRIPTION_STATS, {"user_id": user.id}) for user in users])
    assert [key.decode() for key in redis_raw.scan_iter()] == ["plans:version"]  # started before the load
