import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_me_is_served_from_cache_with_zero_queries(alice, django_assert_num_queries, redis_raw):
    alice.get("/api/me")  # warm
    with django_assert_num_queries(0):
        response = alice.get("/api/me")
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"
    assert redis_raw.exists("user:email:alice@example.com")
