"""The cache commands on a Redis with thousands of keys: they finish in seconds and count right."""

import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.cache.store import Payload

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


def timed(command, *args):
    out = StringIO()
    started = time.perf_counter()
    try:
        call_command(command, *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), time.perf_counter() - started, exc
    return out.getvalue(), time.perf_counter() - started, None


def test_thousands_of_keys_in_seconds(crowded):
    import json

    out, seconds, _ = timed("cache_stats", "--json")
    data = json.loads(out)
    assert data["families"]["user:coins"]["keys"] == COINS
    assert data["families"]["chat:history"]["keys"] == HISTORY
    assert data["redis"]["db_keys"] == COINS + HISTORY + FOREIGN
    assert seconds < 5, seconds

    out, seconds, error = timed("cache_verify", "user:coins")
    assert error is None, out
    assert f"user:coins           checked    {COINS}" in out
    assert seconds < 20, seconds  # one database read per key

    out, seconds, _ = timed("cache_flush", "--all", "--dry-run")
    assert f"would delete {COINS + HISTORY} key(s)" in out
    assert seconds < 5, seconds

    out, seconds, _ = timed("cache_flush", "--all", "--yes")
    assert f"user:coins           deleted    {COINS}" in out
    assert f"chat:history         deleted    {HISTORY}" in out
    assert seconds < 5, seconds
    assert crowded.dbsize() == FOREIGN


def test_warm_hundreds_of_characters(redis_raw):
    from characters.models import Character

    Character.objects.bulk_create(
        [Character(name=f"c{i}", display_name=f"C {i}", sort_order=i) for i in range(500)]
    )
    out, seconds, _ = timed("cache_warm", "character")
    assert "500 key(s) written" in out
    assert len(list(redis_raw.scan_iter(match="character:*", count=1000))) == 500
    assert seconds < 20, seconds
    out, seconds, _ = timed("cache_warm", "character")
    assert "0 key(s) written, 500 already cached" in out
