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


# --- sizing ---------------------------------------------------------------------------------------


def test_daily_users_projects_memory_from_the_per_user_figures(redis_raw):
    """Two users cached now, one with a chat history: bytes per cached user are the per-user
    families' bytes over those two users, and maxmemory follows the documented formula."""
    body = b'{"etag":"0000000000000000","data":{"balance":1}}'
    for user_id in (1, 2):
        redis_raw.set(f"user:coins:{user_id}", body, ex=60)
        redis_raw.set(f"subscription:user:{user_id}", body + b" " * 300, ex=300)
    redis_raw.set("chat:history:1:luna:main", b"m" * 4000, ex=600)
    redis_raw.set("characters:list", b"c" * 20000, ex=1800)

    data = stats_json("--daily-users", "1000000", "--cached-share", "0.1")
    sizing, families = data["sizing"], data["families"]
    assert sizing["cached_users_now"] == 2
    chat = sizing["families"]["chat:history"]
    assert chat["keys_per_cached_user"] == 0.5
    assert chat["bytes_per_cached_user"] == pytest.approx(families["chat:history"]["memory_estimate_bytes"] / 2)
    assert chat["bytes_per_cached_user"] > 2000  # a 4 KB value over two users
    per_user = sum(row["bytes_per_cached_user"] for row in sizing["families"].values())
    assert sizing["bytes_per_cached_user"] == pytest.approx(per_user, abs=0.5)
    assert sizing["shared_bytes"] >= 20000
    expected = sizing["headroom"] * (sizing["shared_bytes"] + 1_000_000 * 0.1 * sizing["bytes_per_cached_user"])
    assert sizing["maxmemory_bytes"] == pytest.approx(expected, rel=1e-6)
    assert "maxmemory = 1.25 x" in sizing["formula"]

    out = StringIO()
    call_command("cache_stats", "--daily-users", "1000000", stdout=out)
    assert "sizing for 1000000 daily users" in out.getvalue() and "set maxmemory" in out.getvalue()


def test_sizing_on_an_empty_cache_says_it_has_nothing_to_measure(redis_raw):
    out = StringIO()
    call_command("cache_stats", "--daily-users", "1000", stdout=out)
    assert "no per-user key is cached now" in out.getvalue()


def test_bad_sizing_options_are_refused(redis_raw):
    with pytest.raises(CommandError, match="--daily-users"):
        stats_json("--daily-users", "0")
    with pytest.raises(CommandError, match="--cached-share"):
        stats_json("--daily-users", "10", "--cached-share", "1.5")


def test_stats_warn_before_evictions_and_metrics_show_memory_pressure(redis_raw, client):
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict:
        response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
        return {sample.name: sample.value for family in text_string_to_metric_families(response.content.decode())
                for sample in family.samples if sample.name.startswith("cache_redis_")}

    assert "cache_redis_memory_used_ratio" not in scrape()  # no maxmemory: no ratio to alert on
    # A 4 MB value written by a tiny command: a large SET would leave a query buffer that Redis
    # frees a moment later, dropping used memory below the ratio this test sets up.
    redis_raw.setrange("filler", 4_000_000, "x")
    used = redis_raw.info("memory")["used_memory"]
    before = redis_raw.config_get("maxmemory")
    redis_raw.config_set("maxmemory", str(int(used / 0.97)))
    try:
        out = StringIO()
        call_command("cache_stats", stdout=out)
        figures = scrape()
    finally:
        redis_raw.config_set("maxmemory", before["maxmemory"])
    assert "of maxmemory (warning at 90%)" in out.getvalue() and "raise maxmemory before evictions reach the hot keys" in out.getvalue()
    assert figures["cache_redis_memory_used_ratio"] >= stats_ops.MEMORY_WARNING_RATIO
    assert figures["cache_redis_maxmemory_bytes"] == int(used / 0.97)
    assert figures["cache_redis_evicted_keys_total"] == 0


def test_metrics_answer_without_redis_figures_when_the_default_cache_is_not_redis(client, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    settings.CACHE_LAYER_ENABLED = False
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert b"cache_redis_used_memory_bytes{" not in response.content
    settings.CACHE_LAYER_ENABLED = True  # a layer that is on but has no django-redis client: still no error
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
