"""Plans, subscribing, cancelling, expiry and usage stats through the API."""

from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from accounts.models import CoinLedgerEntry, User
from subscriptions.models import Subscription
from subscriptions.services import invalidate_subscriptions
from tests.support.payments import plan_pay

pytestmark = pytest.mark.django_db(transaction=True)


def coins(user) -> int:
    return User.objects.get(pk=user.id).coin_balance


def test_plans_are_public_and_ordered(api, plans):
    response = api.get("/api/plans")
    assert response.status_code == 200
    body = response.json()
    assert [p["code"] for p in body] == ["free", "plus", "pro"]
    plus = body[1]
    assert plus == {"code": "plus", "name": "Plus", "price": "9.99", "coins_per_period": 300,
                    "daily_generation_limit": 50, "daily_message_limit": 500, "includes_premium": False}


def test_inactive_plan_is_hidden_and_cannot_be_bought(api, plans, alice, user):
    plans["pro"].is_active = False
    plans["pro"].save()
    assert [p["code"] for p in api.get("/api/plans").json()] == ["free", "plus"]
    assert alice.post("/api/subscription", {"plan": "pro"}, format="json").status_code == 400
    assert coins(user) == 30


def test_current_subscription_is_free_after_registration(alice):
    body = alice.get("/api/subscription").json()
    assert body["status"] == "active"
    assert body["plan"]["code"] == "free"
    assert body["auto_renew"] is True


def test_subscription_needs_auth(api, plans):
    assert api.get("/api/subscription").status_code == 401
    assert api.post("/api/subscription", {"plan": "plus"}, format="json").status_code == 401


def test_a_paid_plan_answers_a_checkout_and_changes_nothing(alice, user, redis_raw):
    alice.get("/api/subscription")
    response = alice.post("/api/subscription", {"plan": "plus"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "payment_required"
    assert body["checkout"]["plan"] == "plus" and body["checkout"]["amount"] == "9.99"
    assert body["checkout"]["status"] == "pending" and body["checkout"]["checkout_url"].startswith("http://testserver/")
    assert body["subscription"]["plan"]["code"] == "free"
    # Nothing granted, nothing switched, and the cached subscription is still the truth.
    assert coins(user) == 30
    assert Subscription.objects.get(user=user).plan.code == "free"
    assert redis_raw.exists(f"subscription:user:{user.id}")
    assert alice.get("/api/subscription").json()["plan"]["code"] == "free"
    # Asking again (a double click) gets the same checkout, not a second payment.
    again = alice.post("/api/subscription", {"plan": "plus"}, format="json")
    assert again.status_code == 202 and again.json()["checkout"]["id"] == body["checkout"]["id"]


def test_asking_for_the_paid_plan_you_have_changes_nothing(alice, user):
    plan_pay(user_id=user.id, plan_code="plus")
    assert coins(user) == 330
    again = alice.post("/api/subscription", {"plan": "plus"}, format="json")
    assert again.status_code == 200 and again.json()["plan"]["code"] == "plus"
    assert coins(user) == 330
    grants = CoinLedgerEntry.objects.filter(user=user, reason="plan_grant", reference="plan:plus")
    assert grants.count() == 1
    total = CoinLedgerEntry.objects.filter(user=user).aggregate(s=Sum("amount"))["s"]
    assert total == coins(user)


@pytest.mark.parametrize("payload", [{"plan": "gold"}, {"plan": ""}, {}, {"plan": 5}, {"plan": "../free"}])
def test_unknown_or_bad_plan_is_400_and_changes_nothing(alice, user, payload):
    response = alice.post("/api/subscription", payload, format="json")
    assert response.status_code == 400
    assert "detail" in response.json()
    assert Subscription.objects.get(user=user).plan.code == "free"
    assert coins(user) == 30


def test_cancel_keeps_access_until_period_end(alice, user, characters):
    response = alice.post("/api/subscription/cancel")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and body["auto_renew"] is False
    assert alice.get("/api/subscription").json()["status"] == "cancelled"
    # Paid-up period: still allowed to generate and chat.
    assert alice.post("/api/generations", {"prompt": "a cat"}, format="json").status_code == 202
    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json").status_code == 202
    # Cancelling twice is harmless.
    assert alice.post("/api/subscription/cancel").json()["status"] == "cancelled"


def test_resubscribing_after_cancel_reactivates(alice, user):
    alice.post("/api/subscription/cancel")
    response = alice.post("/api/subscription", {"plan": "free"}, format="json")
    assert response.status_code == 201
    assert response.json()["status"] == "active"


def expire(user) -> None:
    Subscription.objects.filter(user_id=user.id).update(current_period_end=timezone.now() - timedelta(minutes=1))
    invalidate_subscriptions(user_ids=[user.id])


def test_expired_subscription_forbids_generation_and_chat(alice, user, characters):
    from chat.models import ChatMessage
    from generation.models import Generation

    alice.get("/api/subscription")  # cached while still valid
    expire(user)
    assert alice.get("/api/subscription").json()["status"] == "expired"
    gen = alice.post("/api/generations", {"prompt": "a cat"}, format="json")
    assert gen.status_code == 403
    assert gen.json()["code"] == "no_active_subscription"
    chat = alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json")
    assert chat.status_code == 403
    assert not Generation.objects.exists() and not ChatMessage.objects.exists()
    assert coins(user) == 30


def test_cached_subscription_past_its_end_still_forbids(alice, user, characters, redis_raw):
    """Even without the invalidation, a cached subscription whose period ended grants nothing. The
    cached value is read (no subscription query runs), not the database row."""
    import json

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from core.cache.api import Payload
    from core.http.formatting import iso_utc

    key = f"subscription:user:{user.id}"
    alice.get("/api/subscription")  # cached while valid
    ended = timezone.now() - timedelta(minutes=1)
    data = json.loads(redis_raw.get(key))["data"]
    assert data["status"] == "active"
    # As if it had been cached just before its end with a TTL that outlived it (no sleep: a
    # capped TTL would let the key lapse and the request would read the database instead).
    stamp = Payload.unpack(redis_raw.get(key)).stamp  # built under the plans' current version
    redis_raw.set(key, Payload.of({**data, "current_period_end": iso_utc(ended)}, stamp=stamp).pack(), ex=300)
    Subscription.objects.filter(user_id=user.id).update(current_period_end=ended)  # no invalidation
    with CaptureQueriesContext(connection) as queries:
        response = alice.post("/api/generations", {"prompt": "a cat"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "no_active_subscription"
    assert not [q for q in queries.captured_queries if "subscriptions_subscription" in q["sql"]]
    assert redis_raw.ttl(key) > 200  # the value that was read is still the cached one


def test_stats_count_todays_usage_and_coins_spent(alice, user, characters):
    from generation.models import GenerationSettings

    GenerationSettings.objects.update_or_create(pk=1, defaults={"cost_per_generation": 3})
    stats = alice.get("/api/subscription/stats").json()
    assert stats["plan"] == "free" and stats["status"] == "active"
    assert stats["generations"] == {"used_today": 0, "daily_limit": 5, "remaining": 5}
    assert stats["messages"] == {"used_today": 0, "daily_limit": 50, "remaining": 50}
    assert stats["coins_spent"] == 0
    assert stats["days_left"] == 30
    assert stats["day"] == timezone.now().date().isoformat()

    for i in range(2):
        assert alice.post("/api/generations", {"prompt": f"cat {i}"}, format="json").status_code == 202
    for i in range(3):
        assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": f"m{i}"}, format="json").status_code == 202

    stats = alice.get("/api/subscription/stats").json()  # the cached stats were invalidated
    assert stats["generations"] == {"used_today": 2, "daily_limit": 5, "remaining": 3}
    # Only the user's own messages count, not the replies.
    assert stats["messages"] == {"used_today": 3, "daily_limit": 50, "remaining": 47}
    assert stats["coins_spent"] == 6


def test_each_user_sees_only_their_own_subscription_and_coins(alice, user, make_user, client_for):
    bob_user = make_user("bob@example.com")
    bob = client_for(bob_user)
    alice.get("/api/subscription")  # cache alice's before bob changes his
    plan_pay(user_id=bob_user.id, plan_code="pro")
    assert bob.post("/api/subscription/cancel").status_code == 200
    mine = alice.get("/api/subscription").json()
    assert mine["plan"]["code"] == "free" and mine["status"] == "active"
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert bob.get("/api/me/coins").json() == {"balance": 1530}
    assert bob.get("/api/subscription").json()["status"] == "cancelled"


def test_stats_days_left_and_other_users_usage(alice, user, make_user, client_for, characters):
    other = make_user("bob@example.com")
    client_for(other).post("/api/generations", {"prompt": "bob's"}, format="json")
    Subscription.objects.filter(user_id=user.id).update(current_period_end=timezone.now() + timedelta(days=3, hours=1))
    invalidate_subscriptions(user_ids=[user.id])
    stats = alice.get("/api/subscription/stats").json()
    assert stats["days_left"] == 4  # part of a day counts as a day
    assert stats["generations"]["used_today"] == 0
    assert stats["coins_spent"] == 0


def test_downgrades_wait_for_the_period_end_and_hopping_mints_nothing(alice, user):
    plan_pay(user_id=user.id, plan_code="pro")
    assert coins(user) == 1530
    for plan, code in (("free", 200), ("plus", 200), ("pro", 201), ("plus", 200)):
        assert alice.post("/api/subscription", {"plan": plan}, format="json").status_code == code, plan
    body = alice.get("/api/subscription").json()
    # Still pro until the paid period ends; plus from then on.
    assert body["plan"]["code"] == "pro" and body["next_plan"] == "plus" and body["status"] == "active"
    assert coins(user) == 1530  # 30 (free, at registration) + 1500 (pro, paid once)
    grants = CoinLedgerEntry.objects.filter(user=user, reason="plan_grant")
    assert sorted(g.reference for g in grants) == ["plan:free", "plan:pro"]
    # Cancelling drops the scheduled downgrade too; access lasts to the period end.
    cancelled = alice.post("/api/subscription/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["next_plan"] is None and cancelled["plan"]["code"] == "pro"


def test_an_upgrade_is_paid_and_starts_at_once(alice, user):
    plan_pay(user_id=user.id, plan_code="plus")
    assert alice.post("/api/subscription", {"plan": "pro"}, format="json").status_code == 202
    assert alice.get("/api/subscription").json()["plan"]["code"] == "plus"
    plan_pay(user_id=user.id, plan_code="pro")
    assert alice.get("/api/subscription").json()["plan"]["code"] == "pro"
    assert coins(user) == 30 + 300 + 1500


def test_a_new_paid_period_grants_again(alice, user):
    plan_pay(user_id=user.id, plan_code="plus")
    expire(user)
    assert alice.post("/api/subscription", {"plan": "plus"}, format="json").status_code == 202
    assert coins(user) == 330
    plan_pay(user_id=user.id, plan_code="plus")
    assert coins(user) == 630


def test_free_plan_after_expiry_needs_no_payment(alice, user):
    plan_pay(user_id=user.id, plan_code="plus")
    expire(user)
    response = alice.post("/api/subscription", {"plan": "free"}, format="json")
    assert response.status_code == 201 and response.json()["plan"]["code"] == "free"
