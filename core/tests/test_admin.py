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
