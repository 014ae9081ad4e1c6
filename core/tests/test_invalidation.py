"""Every write path that must invalidate a key family, followed by the read that shows the write
(read-your-writes), through the API and the admin; and rollbacks that must leave the cache alone."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from core.cache.api import Payload
from tests.support.fixtures import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def admin_web(transactional_db):
    """Django's test client logged in as a superuser, for admin forms and actions."""
    from accounts.models import User

    admin = User.objects.create_superuser("root@example.com", "admin-password-123")
    client = Client()
    client.force_login(admin)
    return client


def _put(data: dict, name: str, value) -> None:
    if isinstance(value, bool):
        if value:
            data[name] = "on"  # an unchecked checkbox is simply absent
    elif value is None:
        data[name] = ""
    elif isinstance(value, (list, tuple)):
        data[name] = [str(v) for v in value]
    else:
        data[name] = value


def admin_form(client: Client, url: str) -> dict:
    """The POST data the admin change form at url would send unchanged (main form and inlines)."""
    response = client.get(url)
    assert response.status_code == 200, url
    data: dict = {}
    form = response.context["adminform"].form
    for name, field in form.fields.items():
        if not field.disabled:
            _put(data, name, form[name].value())
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        for sub in formset.forms:
            for name, field in sub.fields.items():
                if not field.disabled:
                    _put(data, sub.add_prefix(name), sub[name].value())
    return data


def admin_post(client: Client, url: str, data: dict) -> None:
    response = client.post(url, data)
    errors = response.context["adminform"].form.errors if response.status_code == 200 and response.context else None
    assert response.status_code == 302, (response.status_code, errors)


def cached(redis_raw, key: str):
    raw = redis_raw.get(key)
    return None if raw is None else json.loads(raw)["data"]


# --- coins and stats --------------------------------------------------------------------------------


def test_generation_amends_coins_and_stats(user, alice, redis_raw):
    """The generation stores the balance and stats its commit made (amend_after_commit) rather than
    deleting them: the keys stay, with the new values."""
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    assert alice.get("/api/subscription/stats").json()["generations"]["used_today"] == 0
    assert redis_raw.exists(f"user:coins:{user.id}", f"subscription:stats:{user.id}") == 2

    assert alice.post("/api/generations", {"prompt": "a cat"}, format="json").status_code == 202

    assert cached(redis_raw, f"user:coins:{user.id}") == {"balance": 29}
    assert cached(redis_raw, f"subscription:stats:{user.id}")["generations"]["used_today"] == 1
    assert alice.get("/api/me/coins").json() == {"balance": 29}
    stats = alice.get("/api/subscription/stats").json()
    assert stats["generations"]["used_today"] == 1
    assert stats["coins_spent"] == 1


def test_a_refused_spend_changes_nothing_and_keeps_the_cache(make_user, client_for, redis_raw):
    broke = make_user("broke@example.com", coins=0)
    client = client_for(broke)
    assert client.get("/api/me/coins").json() == {"balance": 0}
    response = client.post("/api/generations", {"prompt": "a cat"}, format="json")
    assert response.status_code == 402
    assert cached(redis_raw, f"user:coins:{broke.id}") == {"balance": 0}
    assert broke.generations.count() == 0


def test_coin_grant_outside_any_request_invalidates(user, alice, redis_raw):
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    alice.get("/api/me/coins")
    coins_apply(user_id=user.id, amount=12, reason=CoinLedgerEntry.Reason.GRANT)
    assert not redis_raw.exists(f"user:coins:{user.id}")
    assert alice.get("/api/me/coins").json() == {"balance": 42}


# --- subscriptions ------------------------------------------------------------------------------------


def test_plan_change_invalidates_subscription_stats_and_coins(user, alice, redis_raw):
    assert alice.get("/api/subscription").json()["plan"]["code"] == "free"
    assert alice.get("/api/subscription/stats").json()["plan"] == "free"
    alice.get("/api/me/coins")

    checkout = alice.post("/api/subscription", {"plan": "plus"}, format="json").json()["checkout"]
    # Paid when the provider's signed event arrives (here from the offline checkout, delivered in-process).
    paid = APIClient().post(checkout["checkout_url"], {"outcome": "paid"}, format="json")
    assert paid.status_code == 200 and paid.json()["outcome"] == "applied"

    for key in (f"subscription:user:{user.id}", f"subscription:stats:{user.id}", f"user:coins:{user.id}"):
        assert not redis_raw.exists(key), key
    assert alice.get("/api/subscription").json()["plan"]["code"] == "plus"
    stats = alice.get("/api/subscription/stats").json()
    assert stats["plan"] == "plus" and stats["generations"]["daily_limit"] == 50
    assert alice.get("/api/me/coins").json() == {"balance": 330}


def test_cancel_invalidates_subscription_and_stats(user, alice, redis_raw):
    assert alice.get("/api/subscription").json()["status"] == "active"
    assert alice.get("/api/subscription/stats").json()["status"] == "active"

    assert alice.post("/api/subscription/cancel").status_code == 200

    body = alice.get("/api/subscription").json()
    assert body["status"] == "cancelled" and body["auto_renew"] is False
    assert alice.get("/api/subscription/stats").json()["status"] == "cancelled"
    assert cached(redis_raw, f"subscription:user:{user.id}")["status"] == "cancelled"


def test_expiry_job_invalidates_without_signals(user, alice, redis_raw):
    from subscriptions.models import Subscription
    from subscriptions.services import subscriptions_expire

    assert alice.get("/api/subscription").json()["status"] == "active"
    # The period ran out in the database; nothing told the cache (update() sends no signal).
    Subscription.objects.filter(user_id=user.id).update(current_period_end=timezone.now() - timedelta(minutes=1))
    assert cached(redis_raw, f"subscription:user:{user.id}")["status"] == "active"

    assert subscriptions_expire() == 1
    assert not redis_raw.exists(f"subscription:user:{user.id}")
    assert alice.get("/api/subscription").json()["status"] == "expired"


def test_admin_plan_edit_invalidates_every_subscriber(user, alice, make_user, client_for, plans, admin_web, redis_raw):
    bob = make_user("bob@example.com")
    bob_client = client_for(bob)
    for client in (alice, bob_client):
        assert client.get("/api/subscription").json()["plan"]["name"] == "Free"
        client.get("/api/subscription/stats")
    carol = make_user("carol@example.com", plan="plus")
    carol_client = client_for(carol)
    carol_client.get("/api/subscription")
    assert redis_raw.exists("plans:version")

    url = f"/admin/subscriptions/plan/{plans['free'].pk}/change/"
    data = admin_form(admin_web, url)
    data.update(name="Free Forever", daily_generation_limit=7)
    admin_post(admin_web, url, data)

    # One key for every subscriber: the plans' version, not two keys per subscriber.
    assert not redis_raw.exists("plans:version")
    assert alice.get("/api/subscription").json()["plan"]["name"] == "Free Forever"
    assert alice.get("/api/subscription/stats").json()["generations"]["daily_limit"] == 7
    assert bob_client.get("/api/subscription/stats").json()["generations"]["daily_limit"] == 7
    assert bob_client.get("/api/subscription").json()["plan"]["name"] == "Free Forever"
    assert carol_client.get("/api/subscription").json()["plan"]["code"] == "plus"


# --- chat --------------------------------------------------------------------------------------------


def test_message_amends_history_and_stats(user, alice, characters, redis_raw):
    url = "/api/chat/luna/sessions/s1/messages"
    assert alice.post(url, {"content": "first"}, format="json").status_code == 202
    assert [m["content"] for m in alice.get(url).json()["messages"]][0] == "first"
    assert alice.get("/api/subscription/stats").json()["messages"]["used_today"] == 1
    other = "/api/chat/luna/sessions/s2/messages"
    assert alice.post(other, {"content": "elsewhere"}, format="json").status_code == 202
    assert alice.get(other).status_code == 200

    assert alice.post(url, {"content": "second"}, format="json").status_code == 202

    history = cached(redis_raw, f"chat:history:{user.id}:luna:s1")  # amended, not deleted
    assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["first", "second"]
    other_history = cached(redis_raw, f"chat:history:{user.id}:luna:s2")  # only the session that got a message
    assert [m["content"] for m in other_history["messages"] if m["role"] == "user"] == ["elsewhere"]
    body = alice.get(url).json()
    assert [m["content"] for m in body["messages"] if m["role"] == "user"] == ["first", "second"]
    assert len(body["messages"]) == 4
    assert alice.get("/api/subscription/stats").json()["messages"]["used_today"] == 3


def test_deleting_a_message_invalidates_its_history(user, alice, characters, redis_raw):
    from chat.models import ChatMessage

    url = "/api/chat/luna/sessions/s1/messages"
    alice.post(url, {"content": "oops"}, format="json")
    assert len(alice.get(url).json()["messages"]) == 2
    ChatMessage.objects.filter(session__session_id="s1", seq=2).get().delete()  # post_delete
    assert not redis_raw.exists(f"chat:history:{user.id}:luna:s1")
    assert len(alice.get(url).json()["messages"]) == 1


# --- characters ------------------------------------------------------------------------------------


def test_admin_edit_invalidates_character_and_list(alice, characters, admin_web, redis_raw):
    assert alice.get("/api/characters/luna").json()["description"] == "An astronomer."
    alice.get("/api/characters")

    url = f"/admin/characters/character/{characters['luna'].pk}/change/"
    data = admin_form(admin_web, url)
    data["description"] = "A poet now."
    admin_post(admin_web, url, data)

    assert not redis_raw.exists("character:luna")
    assert not redis_raw.exists("characters:list")
    assert alice.get("/api/characters/luna").json()["description"] == "A poet now."
    assert [c["description"] for c in alice.get("/api/characters").json()][0] == "A poet now."


def test_admin_rename_invalidates_old_and_new_name(alice, characters, admin_web, redis_raw):
    assert alice.get("/api/characters/luna").status_code == 200
    alice.get("/api/characters")
    # Something stale already sits under the new name (an old character of that name).
    redis_raw.set("character:selene", Payload.of({"name": "selene", "stale": True}).pack(), ex=600)

    url = f"/admin/characters/character/{characters['luna'].pk}/change/"
    data = admin_form(admin_web, url)
    data["name"] = "selene"
    admin_post(admin_web, url, data)

    assert not redis_raw.exists("character:luna")
    assert not redis_raw.exists("character:selene")
    assert not redis_raw.exists("characters:list")
    assert alice.get("/api/characters/luna").status_code == 404
    assert alice.get("/api/characters/selene").json()["name"] == "selene"
    assert [c["name"] for c in alice.get("/api/characters").json()] == ["selene", "rex", "nyx"]


def test_rename_drops_the_old_names_chat_histories(user, alice, characters, admin_web, redis_raw):
    url = "/api/chat/luna/sessions/s1/messages"
    assert alice.post(url, {"content": "hi"}, format="json").status_code == 202
    assert alice.get(url).status_code == 200
    assert redis_raw.exists(f"chat:history:{user.id}:luna:s1")

    change = f"/admin/characters/character/{characters['luna'].pk}/change/"
    data = admin_form(admin_web, change)
    data["name"] = "selene"
    admin_post(admin_web, change, data)
    assert not redis_raw.exists("chat:version:luna")  # every history under the old name, in one key

    # A new character takes the old name: the renamed one's session must not show up under it.
    from characters.models import Character
    from characters.services import character_save

    character_save(character=Character(name="luna", display_name="Another Luna"))
    assert alice.get(url).status_code == 404
    renamed = alice.get("/api/chat/selene/sessions/s1/messages")
    assert [m["content"] for m in renamed.json()["messages"]][0] == "hi"


def test_admin_bulk_deactivate_invalidates_through_the_service(alice, characters, admin_web, redis_raw):
    assert len(alice.get("/api/characters").json()) == 3
    assert alice.get("/api/characters/rex").status_code == 200
    assert alice.get("/api/characters/luna").status_code == 200

    response = admin_web.post("/admin/characters/character/", {
        "action": "deactivate", "_selected_action": [characters["rex"].pk, characters["nyx"].pk],
    })
    assert response.status_code == 302

    assert not redis_raw.exists("characters:list")
    assert not redis_raw.exists("character:rex")
    assert redis_raw.exists("character:luna")  # not selected, not touched
    assert [c["name"] for c in alice.get("/api/characters").json()] == ["luna"]
    assert alice.get("/api/characters/rex").status_code == 404

    response = admin_web.post("/admin/characters/character/", {
        "action": "activate", "_selected_action": [characters["rex"].pk],
    })
    assert response.status_code == 302
    assert [c["name"] for c in alice.get("/api/characters").json()] == ["luna", "rex"]


def test_admin_delete_invalidates(alice, characters, admin_web, redis_raw):
    assert alice.get("/api/characters/rex").status_code == 200
    alice.get("/api/characters")
    response = admin_web.post("/admin/characters/character/", {
        "action": "delete_selected", "_selected_action": [characters["rex"].pk], "post": "yes",
    })
    assert response.status_code == 302
    assert not redis_raw.exists("character:rex")
    assert alice.get("/api/characters/rex").status_code == 404
    assert "rex" not in [c["name"] for c in alice.get("/api/characters").json()]


def test_admin_refresh_cache_action(alice, characters, admin_web, redis_raw):
    from characters.models import Character

    alice.get("/api/characters/luna")
    alice.get("/api/characters")
    Character.objects.filter(name="luna").update(greeting="Changed in SQL.")  # no signal: stale cache
    response = admin_web.post("/admin/characters/character/", {
        "action": "refresh_cache", "_selected_action": [characters["luna"].pk],
    })
    assert response.status_code == 302
    # Rebuilt from the database at once (characters/tests/test_admin.py checks the message).
    assert alice.get("/api/characters/luna").json()["greeting"] == "Changed in SQL."
    assert redis_raw.exists("character:luna", "characters:list") == 2


# --- generation settings ---------------------------------------------------------------------------


def test_admin_settings_edit_invalidates(alice, admin_web, redis_raw):
    from generation.services import generation_settings_update

    generation_settings_update()  # the singleton row exists
    first = alice.get("/api/generation/settings")
    assert first.json()["cost_per_generation"] == 1

    url = "/admin/generation/generationsettings/1/change/"
    data = admin_form(admin_web, url)
    data["cost_per_generation"] = 3
    admin_post(admin_web, url, data)

    assert not redis_raw.exists("generation:settings")
    second = alice.get("/api/generation/settings")
    assert second.json()["cost_per_generation"] == 3
    assert second["ETag"] != first["ETag"]
    assert alice.post("/api/generations", {"prompt": "a cat"}, format="json").json()["cost"] == 3


# --- profile (user:email) --------------------------------------------------------------------------


def test_email_change_invalidates_old_and_new_email(user, alice, client_for, redis_raw):
    from accounts.selectors import user_profile_cached

    assert alice.get("/api/me").json()["email"] == "alice@example.com"
    # A lookup of the new address before it existed cached "no such user".
    assert user_profile_cached(email="Alice.New@Example.com", user_id=user.id).data() is None
    assert redis_raw.exists("user:email:alice.new@example.com")

    response = alice.patch("/api/me", {"email": "Alice.New@Example.com", "current_password": PASSWORD},
                           format="json")
    assert response.status_code == 200, response.content
    assert not redis_raw.exists("user:email:alice@example.com")
    assert not redis_raw.exists("user:email:alice.new@example.com")

    fresh = alice.__class__()
    fresh.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['tokens']['access']}")
    assert fresh.get("/api/me").json()["email"] == "alice.new@example.com"
    assert cached(redis_raw, "user:email:alice.new@example.com")["id"] == user.id
    assert alice.get("/api/me").json()["email"] == "alice.new@example.com"  # the old token, same user


def test_display_name_change_is_read_back(user, alice, redis_raw):
    alice.get("/api/me")
    assert alice.patch("/api/me", {"display_name": "Al"}, format="json").status_code == 200
    assert alice.get("/api/me").json()["display_name"] == "Al"
    assert cached(redis_raw, "user:email:alice@example.com")["display_name"] == "Al"


def test_a_profile_save_never_writes_back_a_stale_balance(user, alice, redis_raw, client_for):
    """A user loaded before a spend and saved after it (admin form, set_password) keeps the spend."""
    from accounts.models import User

    loaded = User.objects.get(pk=user.id)  # balance 30
    _coins(user)  # spends 5: 25
    loaded.display_name = "Saved later"
    loaded.set_password("Another-passw0rd-7")
    loaded.save()
    assert User.objects.get(pk=user.id).coin_balance == 25
    assert alice.get("/api/me/coins").status_code == 401  # issued before the password change
    fresh = client_for(User.objects.get(pk=user.id))
    assert fresh.get("/api/me/coins").json() == {"balance": 25}
    assert fresh.get("/api/me").json()["display_name"] == "Saved later"


def test_admin_deactivation_invalidates_and_the_token_gets_401(user, alice, admin_web, redis_raw):
    assert alice.get("/api/me").status_code == 200
    url = f"/admin/accounts/user/{user.pk}/change/"
    data = admin_form(admin_web, url)
    data.pop("is_active")
    admin_post(admin_web, url, data)

    assert not redis_raw.exists("user:email:alice@example.com")
    assert alice.get("/api/me").status_code == 401
    assert alice.get("/api/me/coins").status_code == 401
    assert cached(redis_raw, "user:email:alice@example.com")["is_active"] is False


def test_admin_email_change_invalidates_old_and_new_email(user, alice, admin_web, redis_raw):
    from accounts.selectors import user_profile_cached

    assert alice.get("/api/me").status_code == 200
    assert user_profile_cached(email="ally@example.com", user_id=user.id).data() is None  # cached "no such user"
    url = f"/admin/accounts/user/{user.pk}/change/"
    data = admin_form(admin_web, url)
    data["email"] = "Ally@Example.com"
    admin_post(admin_web, url, data)

    assert not redis_raw.exists("user:email:alice@example.com")
    assert not redis_raw.exists("user:email:ally@example.com")
    assert alice.get("/api/me").json()["email"] == "ally@example.com"  # same user, by id


def test_admin_password_change_invalidates_the_profile(user, alice, admin_web, redis_raw):
    assert alice.get("/api/me").status_code == 200
    response = admin_web.post(f"/admin/accounts/user/{user.pk}/password/",
                              {"password1": "A-new-passw0rd-42", "password2": "A-new-passw0rd-42",
                               "usable_password": "true"})
    assert response.status_code == 302, response.context["form"].errors if response.context else response
    assert not redis_raw.exists("user:email:alice@example.com")
    user.refresh_from_db()
    assert user.check_password("A-new-passw0rd-42")


def test_registration_clears_a_cached_unknown_email(api, plans, redis_raw):
    from accounts.selectors import user_profile_cached

    assert user_profile_cached(email="new@example.com", user_id=0).data() is None
    response = api.post("/api/auth/register", {"email": "New@Example.com", "password": PASSWORD}, format="json")
    assert response.status_code == 201
    assert not redis_raw.exists("user:email:new@example.com")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['tokens']['access']}")
    assert api.get("/api/me").json()["email"] == "new@example.com"


# --- rollbacks leave the cache alone ---------------------------------------------------------------


def _coins(user):
    from accounts.models import CoinLedgerEntry
    from accounts.services import coins_apply

    coins_apply(user_id=user.id, amount=-5, reason=CoinLedgerEntry.Reason.SPEND)


def _profile(user):
    from accounts.services import user_update

    user_update(user_id=user.id, display_name="Rolled back")


def _character(user):
    from characters.models import Character
    from characters.services import character_save

    luna = Character.objects.get(name="luna")
    luna.name = "gone"
    character_save(character=luna)


def _bulk(user):
    from characters.services import characters_set_active

    characters_set_active(names=["luna"], active=False)


def _message(user):
    from chat.services import chat_message_send

    chat_message_send(user_id=user.id, character="luna", session="s1", content="never sent")


def _plan(user):
    from subscriptions.models import Plan
    from subscriptions.services import subscription_period_start

    subscription_period_start(user_id=user.id, plan=Plan.objects.get(code="pro"), grant_key="paid")


def _settings(user):
    from generation.services import generation_settings_update

    generation_settings_update(cost_per_generation=9)


ROLLBACKS = {
    "coins": (_coins, ["user:coins:{uid}", "subscription:stats:{uid}"]),
    "profile": (_profile, ["user:email:alice@example.com"]),
    "character": (_character, ["character:luna", "characters:list"]),
    "bulk": (_bulk, ["character:luna", "characters:list"]),
    "message": (_message, ["chat:history:{uid}:luna:s1", "subscription:stats:{uid}"]),
    "plan": (_plan, ["subscription:user:{uid}", "subscription:stats:{uid}", "user:coins:{uid}"]),
    "settings": (_settings, ["generation:settings"]),
}

URLS = ["/api/me", "/api/me/coins", "/api/subscription", "/api/subscription/stats", "/api/characters",
        "/api/characters/luna", "/api/generation/settings", "/api/chat/luna/sessions/s1/messages"]


@pytest.mark.parametrize("write", ROLLBACKS)
def test_a_rolled_back_write_does_not_invalidate(write, user, alice, characters, redis_raw):
    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json").status_code == 202
    before = {url: alice.get(url).content for url in URLS}
    do, keys = ROLLBACKS[write]
    keys = [k.format(uid=user.id) for k in keys]
    values = {k: redis_raw.get(k) for k in keys}
    assert all(values.values()), values

    with pytest.raises(RuntimeError), transaction.atomic():
        do(user)
        raise RuntimeError("the request failed after the write")

    assert {k: redis_raw.get(k) for k in keys} == values
    assert {url: alice.get(url).content for url in URLS} == before


def test_a_committed_write_after_a_rolled_back_savepoint_still_invalidates(user, alice, redis_raw):
    """on_commit callbacks of a rolled-back savepoint go, those of the outer transaction stay."""
    alice.get("/api/me/coins")
    alice.get("/api/me")
    with transaction.atomic():
        try:
            with transaction.atomic():
                _profile(user)
                raise RuntimeError
        except RuntimeError:
            pass
        _coins(user)
        assert redis_raw.exists(f"user:coins:{user.id}")  # not before the commit
    assert not redis_raw.exists(f"user:coins:{user.id}")
    assert redis_raw.exists("user:email:alice@example.com")
    assert alice.get("/api/me/coins").json() == {"balance": 25}
    assert alice.get("/api/me").json()["display_name"] == ""
