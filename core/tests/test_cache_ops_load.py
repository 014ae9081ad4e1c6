"""The cache commands on a Redis with thousands of keys: they count right and talk to Redis in
batches (a bounded number of SCAN/UNLINK/pipeline round trips, never KEYS). Speed itself is for
`make bench`, not for a timed unit test on a shared machine."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.cache.api import Payload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

COINS, HISTORY, FOREIGN = 4000, 1000, 2000


@pytest.fixture
def crowded(redis_raw):
    # user:coins of users that do not exist: the database says balance 0, as cached, so no drift.
    zero = Payload.of({"balance": 0}).pack()
    pipe = redis_raw.pipeline(transaction=False)
    for i in range(COINS):
        pipe.set(f"user:coins:{i}", zero, ex=60)
    for i in range(HISTORY):
        pipe.set(f"chat:history:{i}:luna:s{i}", b'{"etag":"0000000000000000","data":{}}', ex=600)
    for i in range(FOREIGN):
        pipe.set(f"otherapp:user:coins:{i}", b"theirs")
    pipe.execute()
    return redis_raw


def run(command, *args, redis_raw=None):
    """The command's output, its CommandError if any, and the Redis commands it sent."""
    if redis_raw is not None:
        redis_raw.config_resetstat()  # our private server: its counters are ours to reset
    out = StringIO()
    error = None
    try:
        call_command(command, *args, stdout=out)
    except CommandError as exc:
        error = exc
    calls = {}
    if redis_raw is not None:
        calls = {name.removeprefix("cmdstat_"): value["calls"]
                 for name, value in redis_raw.info("commandstats").items()}
    return out.getvalue(), error, calls


def test_thousands_of_keys_in_batches(crowded):
    import json

    total = COINS + HISTORY + FOREIGN
    out, _, calls = run("cache_stats", "--json", redis_raw=crowded)
    data = json.loads(out)
    assert data["families"]["user:coins"]["keys"] == COINS
    assert data["families"]["chat:history"]["keys"] == HISTORY
    assert data["redis"]["db_keys"] == total
    assert "keys" not in calls
    assert calls["scan"] <= 8 * (total // 1000 + 2), calls  # SCAN COUNT 1000 per family, not per key

    out, error, calls = run("cache_verify", "user:coins", redis_raw=crowded)
    assert error is None, out
    assert f"user:coins           checked    {COINS}" in out
    assert calls["mget"] <= COINS // 500 + 1, calls  # values read in batches of 500

    out, _, calls = run("cache_flush", "--all", "--dry-run", redis_raw=crowded)
    assert f"would delete {COINS + HISTORY} key(s)" in out
    assert "unlink" not in calls and "keys" not in calls

    out, _, calls = run("cache_flush", "--all", "--yes", redis_raw=crowded)
    assert f"user:coins           deleted    {COINS}" in out
    assert f"chat:history         deleted    {HISTORY}" in out
    assert calls["unlink"] <= (COINS + HISTORY) // 1000 + 8, calls  # batches of 1000, never one per key
    assert crowded.dbsize() == FOREIGN


def test_warm_hundreds_of_characters(redis_raw):
    from characters.models import Character

    Character.objects.bulk_create(
        [Character(name=f"c{i}", display_name=f"C {i}", sort_order=i) for i in range(500)]
    )
    out, _, _ = run("cache_warm", "character")
    assert "500 key(s) written" in out
    assert len(list(redis_raw.scan_iter(match="character:*", count=1000))) == 500
    out, _, _ = run("cache_warm", "character")
    assert "0 key(s) written, 500 already cached" in out
