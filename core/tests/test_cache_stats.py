import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from core.cache.ops import stats as stats_ops
from core.cache.registry import FAMILIES

pytestmark = pytest.mark.django_db(transaction=True)


def stats_json(*args) -> dict:
    out = StringIO()
    call_command("cache_stats", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_stats_counts_keys_per_family_with_memory_and_ttl_spread(redis_raw):
    for i, ttl in enumerate((10, 20, 30, 40, 50)):
        redis_raw.set(f"user:coins:{i}", b'{"etag":"0000000000000000","data":{"balance":1}}', ex=ttl)
    redis_raw.set("character:luna", b"x" * 5000, ex=1800)
    redis_raw.set("character:luna:extra", b"not ours")
    redis_raw.set("unrelated", b"not ours")

    data = stats_json()
    coins = data["families"]["user:coins"]
    assert coins["keys"] == 5
    # TTL counts down in whole seconds while the test runs: allow a second or two.
    assert 8 <= coins["ttl_min"] <= 10 and 28 <= coins["ttl_median"] <= 30 and 48 <= coins["ttl_max"] <= 50
    assert coins["ttl_default"] == 60
    assert coins["memory_estimate_bytes"] > 0
    assert data["families"]["character"]["keys"] == 1
    assert data["families"]["character"]["memory_estimate_bytes"] >= 5000
    assert data["families"]["chat:history"] == {**data["families"]["chat:history"], "keys": 0, "ttl_min": None}
    assert set(data["families"]) == set(FAMILIES)


def test_stats_reports_redis_info(redis_raw, redis_server):
    redis_raw.config_set("maxmemory", "64mb")
    try:
        redis_raw.get("missing")
        redis_raw.set("k", b"1")
        redis_raw.get("k")
        info = stats_json()["redis"]
    finally:
        redis_raw.config_set("maxmemory", "0")
    assert info["maxmemory"] == 64 * 1024 * 1024
    assert info["used_memory"] > 0
    assert info["maxmemory_policy"] == redis_raw.config_get("maxmemory-policy")["maxmemory-policy"]
    assert 0 < info["hit_ratio"] < 1
    assert info["connected_clients"] >= 1
    assert info["aof_enabled"] == 0  # the test server runs without AOF
    assert info["rdb_last_bgsave_status"] == "ok"
    assert info["evicted_keys"] == 0
    assert info["db_keys"] == 1
    assert info["stop_writes_on_bgsave_error"] in ("yes", "no")


def test_stats_show_the_apps_own_counters(characters):
    from characters.cache import CHARACTER
    from core.cache.api import fetch

    before = stats_ops.app_counters()["families"]["character"]
    fetch(CHARACTER, name="luna")  # miss
    fetch(CHARACTER, name="luna")  # hit
    after = stats_json()["app"]["families"]["character"]
    assert after["miss"] == before["miss"] + 1
    assert after["hit"] == before["hit"] + 1


def test_stats_text_output(redis_raw):
    redis_raw.set("generation:settings", b'{"etag":"0000000000000000","data":{}}', ex=3600)
    out = StringIO()
    call_command("cache_stats", stdout=out)
    text = out.getvalue()
    assert "generation:settings        1" in text
    assert "policy" in text and "hit ratio" in text and "last bgsave ok" in text
    assert "this process only" in text


def test_app_counters_sum_every_worker_in_multiprocess_mode(tmp_path, monkeypatch):
    # Two "workers" write their counters to the shared directory, as gunicorn workers do.
    script = (
        "from core import metrics\n"
        "c = metrics.FamilyCounters('user:coins')\n"
        "c.hit.inc(3); c.miss.inc(); c.deleted.inc(2)\n"
        "metrics.cache_errors.labels(operation='get').inc()\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, cwd=settings.BASE_DIR, check=True)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    counters = stats_ops.app_counters()
    assert counters["multiprocess"] is True
    coins = counters["families"]["user:coins"]
    assert (coins["hit"], coins["miss"], coins["deleted"]) == (6, 2, 4)
    assert coins["hit_ratio"] == 0.75
    assert counters["errors"]["get"] == 2


def test_stats_fails_loudly_when_redis_is_down(redis_server):
    redis_server.stop()
    try:
        with pytest.raises(CommandError, match="Redis is unreachable"):
            call_command("cache_stats", stdout=StringIO())
    finally:
        redis_server.start()


def test_stats_warn_about_noeviction_and_say_whose_hit_ratio_it_is(redis_raw):
    before = redis_raw.config_get("maxmemory*")
    redis_raw.config_set("maxmemory-policy", "noeviction")
    redis_raw.config_set("maxmemory", "512mb")
    try:
        out = StringIO()
        call_command("cache_stats", stdout=out)
    finally:
        redis_raw.config_set("maxmemory-policy", before["maxmemory-policy"])
        redis_raw.config_set("maxmemory", before["maxmemory"])
    text = out.getvalue()
    assert "policy noeviction: at the memory limit Redis refuses writes" in text
    assert "(the whole server, all clients; the app's own per family below)" in text
