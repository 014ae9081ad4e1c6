"""Registration, tokens, throttling, the profile, coins and the ledger through the API."""

import pytest
from django.db.models import Sum
from rest_framework.test import APIClient

from accounts.models import CoinLedgerEntry, User
from subscriptions.models import Subscription
from tests.support.fixtures import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def register(api, email="Bob@Example.COM", password=PASSWORD, **extra):
    return api.post("/api/auth/register", {"email": email, "password": password, **extra}, format="json")


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def test_register_creates_lowercased_user_on_free_plan_with_granted_coins(api, plans):
    response = register(api, display_name="Bob")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["user"]["email"] == "bob@example.com"
    assert body["user"]["display_name"] == "Bob"
    assert set(body["tokens"]) == {"access", "refresh"}

    user = User.objects.get(email="bob@example.com")
    assert user.coin_balance == 30
    ledger = list(CoinLedgerEntry.objects.filter(user=user))
    assert [(e.amount, e.reason, e.balance_after) for e in ledger] == [(30, "plan_grant", 30)]
    sub = Subscription.objects.get(user=user)
    assert sub.plan.code == "free" and sub.status == "active"
    # The returned token works straight away.
    me = bearer(body["tokens"]["access"]).get("/api/me")
    assert me.status_code == 200 and me.json()["id"] == user.id


def test_register_duplicate_email_is_rejected_case_insensitively(api, plans):
    assert register(api, "carol@example.com").status_code == 201
    response = register(api, "  CAROL@example.com ")
    assert response.status_code == 400
    assert "email" in response.json()["errors"]
    assert User.objects.filter(email__iexact="carol@example.com").count() == 1


@pytest.mark.parametrize("password", ["short1", "password123", "12345678901", "bob@example.com"])
def test_register_rejects_weak_password_and_writes_nothing(api, plans, password):
    response = register(api, "bob@example.com", password=password)
    assert response.status_code == 400
    body = response.json()
    assert "detail" in body and "password" in body["errors"]
    assert not User.objects.exists()
    assert not CoinLedgerEntry.objects.exists()


def test_register_rejects_bad_email(api, plans):
    response = register(api, "not-an-email")
    assert response.status_code == 400
    assert "email" in response.json()["errors"]
    assert not User.objects.exists()


def test_token_with_mixed_case_email(api, make_user):
    user = make_user("dave@example.com")
    response = api.post("/api/auth/token", {"email": " DaVe@Example.com", "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    tokens = response.json()
    me = bearer(tokens["access"]).get("/api/me")
    assert me.status_code == 200 and me.json()["id"] == user.id


def test_token_wrong_password_is_401(api, make_user):
    make_user("dave@example.com")
    response = api.post("/api/auth/token", {"email": "dave@example.com", "password": "wrong-password-1"}, format="json")
    assert response.status_code == 401
    assert "detail" in response.json()
    assert "access" not in response.json()


def test_token_unknown_user_is_401(api, plans):
    response = api.post("/api/auth/token", {"email": "ghost@example.com", "password": PASSWORD}, format="json")
    assert response.status_code == 401


def test_refresh_gives_a_working_access_token(api, make_user):
    user = make_user("erin@example.com")
    tokens = api.post("/api/auth/token", {"email": "erin@example.com", "password": PASSWORD}, format="json").json()
    response = api.post("/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 200
    access = response.json()["access"]
    me = bearer(access).get("/api/me")
    assert me.status_code == 200 and me.json()["id"] == user.id
    assert api.post("/api/auth/token/refresh", {"refresh": "garbage"}, format="json").status_code == 401


def test_no_token_or_bad_token_is_401(api, plans):
    assert api.get("/api/me").status_code == 401
    assert bearer("not.a.jwt").get("/api/me").status_code == 401


def test_burst_of_failed_logins_is_throttled(api, make_user, throttle_rates):
    make_user("frank@example.com")
    throttle_rates(auth="5/min")
    statuses = [
        api.post("/api/auth/token", {"email": "frank@example.com", "password": f"wrong-{i}"}, format="json").status_code
        for i in range(8)
    ]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 3
    # Throttled even with the right password: the limit is per client, not per outcome.
    right = api.post("/api/auth/token", {"email": "frank@example.com", "password": PASSWORD}, format="json")
    assert right.status_code == 429
    assert "detail" in right.json()
    assert "Retry-After" in right.headers


def test_registration_is_throttled(api, plans, throttle_rates):
    throttle_rates(register="2/min")
    statuses = [register(api, f"u{i}@example.com").status_code for i in range(4)]
    assert statuses == [201, 201, 429, 429]
    assert User.objects.count() == 2


def test_me_get_and_patch_display_name(alice, user):
    body = alice.get("/api/me").json()
    assert body["email"] == "alice@example.com" and body["id"] == user.id
    response = alice.patch("/api/me", {"display_name": "Alice A."}, format="json")
    assert response.status_code == 200
    assert response.json()["display_name"] == "Alice A."
    assert "tokens" not in response.json()
    # The cached profile was invalidated: the next read shows the change.
    assert alice.get("/api/me").json()["display_name"] == "Alice A."


def test_me_email_change_requires_current_password(alice, user):
    response = alice.patch("/api/me", {"email": "alice2@example.com"}, format="json")
    assert response.status_code == 400
    assert "current_password" in response.json()["errors"]
    response = alice.patch("/api/me", {"email": "alice2@example.com", "current_password": "nope-nope-1"}, format="json")
    assert response.status_code == 400
    assert User.objects.get(pk=user.id).email == "alice@example.com"


def test_me_email_change_returns_new_tokens_and_old_token_still_works(alice, user, api):
    response = alice.patch(
        "/api/me", {"email": "Alice.New@Example.com", "current_password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["email"] == "alice.new@example.com"
    assert set(body["tokens"]) == {"access", "refresh"}
    # The new token carries the new email; the old token still authenticates (found by id).
    assert bearer(body["tokens"]["access"]).get("/api/me").json()["email"] == "alice.new@example.com"
    old = alice.get("/api/me")
    assert old.status_code == 200
    assert old.json()["email"] == "alice.new@example.com" and old.json()["id"] == user.id
    # Logging in works with the new address only.
    assert api.post("/api/auth/token", {"email": "alice.new@example.com", "password": PASSWORD},
                    format="json").status_code == 200
    assert api.post("/api/auth/token", {"email": "alice@example.com", "password": PASSWORD},
                    format="json").status_code == 401


def test_me_email_change_to_taken_address_is_400(alice, user, make_user):
    make_user("taken@example.com")
    response = alice.patch("/api/me", {"email": "TAKEN@example.com", "current_password": PASSWORD}, format="json")
    assert response.status_code == 400
    assert "email" in response.json()["errors"]
    assert User.objects.get(pk=user.id).email == "alice@example.com"


def test_inactive_user_token_is_rejected(alice, user):
    assert alice.get("/api/me").status_code == 200  # warms user:email
    User.objects.filter(pk=user.id).update(is_active=False)
    from accounts.cache import USER_EMAIL
    from accounts.selectors import user_profile_cached  # noqa: F401  (the cache holds the old profile)
    from core.cache.api import invalidate

    invalidate((USER_EMAIL, {"email": "alice@example.com", "user_id": user.id}))
    assert alice.get("/api/me").status_code == 401


def test_coins_and_paginated_history(alice, user, make_user):
    from accounts.services import coins_apply

    for i in range(24):
        coins_apply(user_id=user.id, amount=-1, reason="spend", reference=f"t:{i}")
    other = make_user("other@example.com", coins=99)
    assert alice.get("/api/me/coins").json() == {"balance": 6}

    first = alice.get("/api/me/coins/history").json()
    # 1 plan grant + 24 spends (alice had exactly 30 coins, so no adjustment row).
    assert first["count"] == 25
    assert len(first["results"]) == 20
    assert first["next"] is not None
    assert first["results"][0]["balance_after"] == 6  # newest first
    assert first["results"][0]["amount"] == -1
    second = alice.get("/api/me/coins/history", {"page": 2}).json()
    assert len(second["results"]) == 5
    assert second["results"][-1]["reason"] == "plan_grant"
    ids = [e["id"] for e in first["results"] + second["results"]]
    assert ids == sorted(ids, reverse=True)
    # Only alice's rows.
    assert not CoinLedgerEntry.objects.filter(user=other, id__in=ids).exists()
    total = CoinLedgerEntry.objects.filter(user=user).aggregate(s=Sum("amount"))["s"]
    assert total == 6
    assert alice.get("/api/me/coins/history", {"page_size": 5}).json()["results"].__len__() == 5
    assert alice.get("/api/me/coins/history", {"page": 99}).status_code == 404


def test_every_response_carrying_tokens_is_no_store(api, plans, make_user):
    def no_store(response) -> bool:
        return "no-store" in response.get("Cache-Control", "")

    registered = register(api, email="carol@example.com")
    assert registered.status_code == 201 and no_store(registered)
    login = api.post("/api/auth/token", {"email": "carol@example.com", "password": PASSWORD}, format="json")
    assert login.status_code == 200 and no_store(login)
    refreshed = api.post("/api/auth/token/refresh", {"refresh": login.json()["refresh"]}, format="json")
    assert refreshed.status_code == 200 and no_store(refreshed)
    client = bearer(login.json()["access"])
    moved = client.patch("/api/me", {"email": "carol2@example.com", "current_password": PASSWORD}, format="json")
    assert moved.status_code == 200 and "tokens" in moved.json() and no_store(moved)
    client = bearer(moved.json()["tokens"]["access"])
    changed = client.post("/api/me/password", {"current_password": PASSWORD, "new_password": "a-new-passw0rd-9"},
                          format="json")
    assert changed.status_code == 200 and no_store(changed)
    # Refused logins too: nothing about a credential exchange belongs in a cache.
    assert no_store(api.post("/api/auth/token", {"email": "carol2@example.com", "password": "wrong-one-1"},
                             format="json"))
