"""A user without a subscription row (a row deleted in the admin, an account made outside the
register flow) is in the valid state "none": no 500, no infinite TTL, no lease left behind."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from subscriptions.models import Subscription
from tests.support.fixtures import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def unsubscribed(make_user, client_for):
    user = make_user("nosub@example.com", coins=10)
    Subscription.objects.filter(user=user).delete()
    return user, client_for(user)


def test_subscription_and_stats_say_none(unsubscribed, redis_raw):
    _, client = unsubscribed
    response = client.get("/api/subscription")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "none", "plan": None, "current_period_start": None,
                               "current_period_end": None, "auto_renew": False, "next_plan": None}
    # Cached with the family's own finite TTL, and no lease left behind.
    assert 0 < redis_raw.ttl(f"subscription:user:{unsubscribed[0].id}") <= 300
    assert list(redis_raw.scan_iter(match="lease:*")) == []
    stats = client.get("/api/subscription/stats")
    assert stats.status_code == 200, stats.content
    assert stats.json()["status"] == "none" and stats.json()["plan"] is None


def test_generation_and_chat_are_403_and_charge_nothing(unsubscribed, characters):
    user, client = unsubscribed
    response = client.post("/api/generations", {"prompt": "a cat"}, format="json")
    assert response.status_code == 403, response.content
    assert response.json()["code"] == "no_active_subscription"
    chat = client.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json")
    assert chat.status_code == 403, chat.content
    assert chat.json()["code"] == "no_active_subscription"
    user.refresh_from_db()
    assert user.coin_balance == 10


def test_superuser_without_a_subscription_row_is_not_a_500(db, plans, api):
    from accounts.models import User

    User.objects.create_superuser("root@example.com", PASSWORD)
    Subscription.objects.filter(user__email="root@example.com").delete()  # whatever created it
    token = api.post("/api/auth/token", {"email": "root@example.com", "password": PASSWORD}, format="json")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token.json()['access']}")
    assert api.get("/api/subscription").status_code == 200


def test_warm_active_users_does_not_abort_on_them(unsubscribed, make_user, redis_raw):
    from accounts.models import User

    user, _ = unsubscribed
    other = make_user("other@example.com", coins=1)
    User.objects.filter(pk__in=[user.pk, other.pk]).update(last_login=timezone.now())
    out = StringIO()
    call_command("cache_warm", "subscription:user", "subscription:stats", "--users-active-since", "1", stdout=out)
    for uid in (user.id, other.id):
        assert redis_raw.exists(f"subscription:user:{uid}", f"subscription:stats:{uid}") == 2
    assert list(redis_raw.scan_iter(match="lease:*")) == []


@pytest.mark.parametrize("data", [{}, {"current_period_end": None}, {"current_period_end": "2000-01-01T00:00:00Z"},
                                  {"current_period_end": "9999-12-31T23:59:59Z"}])
def test_ttl_is_finite_and_at_least_one_second(data):
    from subscriptions.cache import SUBSCRIPTION_USER

    ttl = SUBSCRIPTION_USER.ttl_for(data)
    assert isinstance(ttl, int) and 1 <= ttl <= SUBSCRIPTION_USER.ttl


def test_loader_failure_releases_the_lease(user, alice, redis_raw, monkeypatch):
    from subscriptions.cache import SUBSCRIPTION_USER

    def broken(data):
        raise RuntimeError("cap failed")

    monkeypatch.setitem(SUBSCRIPTION_USER.__dict__, "ttl_cap", broken)
    with pytest.raises(RuntimeError):
        alice.get("/api/subscription")
    assert list(redis_raw.scan_iter(match="lease:*")) == []
