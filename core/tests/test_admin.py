import pytest
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/admin/cache-stats/"


@pytest.fixture
def staff_client():
    from accounts.models import User

    staff = User.objects.create_user(email="ops@example.com", password="x-long-password-1", is_staff=True)
    client = Client()
    client.force_login(staff)
    return client


def test_staff_see_the_cache_stats_page(staff_client, redis_raw):
    redis_raw.set("character:luna", b'{"etag":"0000000000000000","data":{}}', ex=1800)
    redis_raw.set("user:coins:1", b'{"etag":"0000000000000000","data":{}}', ex=60)
    response = staff_client.get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Cache statistics" in page
    assert response.context["stats"]["families"]["character"]["keys"] == 1
    assert response.context["stats"]["families"]["user:coins"]["keys"] == 1
    for text in ("<code>chat:history</code>", "eviction policy", "keyspace hit ratio", "last RDB save",
                 "Circuit breaker"):
        assert text in page


def test_the_admin_index_links_to_the_page(staff_client):
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    assert f'href="{URL}"' in response.content.decode()


def test_anonymous_users_are_sent_to_the_login(redis_raw):
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_non_staff_users_do_not_see_it(make_user):
    client = Client()
    client.force_login(make_user("plain@example.com"))
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert b"keyspace hit ratio" not in response.content


def test_the_page_reports_an_unreachable_redis(staff_client, redis_server):
    redis_server.stop()
    try:
        response = staff_client.get(URL)
    finally:
        redis_server.start()
    assert response.status_code == 200
    assert "Redis is unreachable" in response.content.decode()


def test_the_page_says_the_keyspace_hit_ratio_is_the_whole_servers(staff_client, redis_raw):
    page = staff_client.get(URL).content.decode()
    assert "The whole Redis server since it started" in page
    assert "The eviction policy is <code>noeviction</code>" not in page  # the test Redis has no memory limit


def test_the_page_warns_about_noeviction(staff_client, redis_raw):
    before = redis_raw.config_get("maxmemory*")
    redis_raw.config_set("maxmemory-policy", "noeviction")
    redis_raw.config_set("maxmemory", "512mb")
    try:
        page = staff_client.get(URL).content.decode()
    finally:
        redis_raw.config_set("maxmemory-policy", before["maxmemory-policy"])
        redis_raw.config_set("maxmemory", before["maxmemory"])
    assert "The eviction policy is <code>noeviction</code>" in page
    assert "use allkeys-lru" in page


def test_the_page_charts_hit_ratio_and_memory_per_family(staff_client, alice, characters):
    for _ in range(3):
        alice.get("/api/characters/luna")  # a miss, then hits
    alice.get("/api/characters")
    response = staff_client.get(URL)
    rows = {row["name"]: row for row in response.context["chart"]}
    counters = response.context["stats"]["app"]["families"]  # this process's, other tests' reads included
    assert set(rows) == set(response.context["stats"]["families"])
    for name, row in rows.items():
        ratio = counters[name]["hit_ratio"]
        assert row["hit_pct"] == (None if ratio is None else round(100 * ratio))  # None: no bar
    assert rows["character"]["hit_pct"] > 0
    assert max(row["memory_pct"] for row in rows.values()) == 100  # the largest family is the full bar
    assert rows["characters:list"]["memory_pct"] > 0
    page = response.content.decode()
    assert "At a glance: per family" in page and f'aria-label="hit ratio {rows["character"]["hit_pct"]}%"' in page
