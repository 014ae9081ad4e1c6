"""The admin: every page renders, writes go through the services (ledger, cache invalidation)."""

import pytest
from django.test import Client

from accounts.models import CoinLedgerEntry, User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("model", ["accounts/user", "accounts/coinledgerentry", "subscriptions/plan",
                                   "subscriptions/subscription", "characters/character",
                                   "generation/generationsettings", "generation/generation", "chat/chatsession"])
def test_changelists_and_change_pages_render(staff, user, alice, characters, model):
    from generation.selectors import generation_settings_get

    generation_settings_get()  # the singleton row (a transactional test starts without it)
    alice.post("/api/generations", {"prompt": "x"}, format="json")
    alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hi"}, format="json")
    response = staff.get(f"/admin/{model}/")
    assert response.status_code == 200
    from django.apps import apps

    first = apps.get_model(*model.split("/")).objects.order_by("pk").first()
    assert staff.get(f"/admin/{model}/{first.pk}/change/").status_code == 200


def test_admin_is_closed_to_anonymous_and_non_staff(user):
    assert Client().get("/admin/accounts/user/").status_code == 302
    client = Client()
    client.force_login(user)
    assert client.get("/admin/accounts/user/").status_code == 302


def test_user_created_in_admin_gets_the_free_plan_and_its_coins(staff):
    response = staff.post("/admin/accounts/user/add/", {
        "email": "New.Person@Example.com", "password1": "a-long-password-42", "password2": "a-long-password-42",
        "usable_password": "true",
    })
    assert response.status_code == 302, response.content[:2000]
    user = User.objects.get(email="new.person@example.com")
    assert user.coin_balance == 30
    assert user.subscription.plan.code == "free"
    assert [e.amount for e in CoinLedgerEntry.objects.filter(user=user)] == [30]


def test_ledger_is_read_only_in_admin(staff, user):
    entry = CoinLedgerEntry.objects.filter(user=user).first()
    assert staff.get("/admin/accounts/coinledgerentry/add/").status_code == 403
    response = staff.post(f"/admin/accounts/coinledgerentry/{entry.pk}/change/", {"amount": 1000})
    assert response.status_code == 403
    assert staff.post(f"/admin/accounts/coinledgerentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.amount == 30
    assert User.objects.get(pk=user.id).coin_balance == 30


def test_generation_settings_edit_in_admin_reaches_the_api(staff, alice, user):
    from generation.selectors import generation_settings_get

    assert alice.get("/api/generation/settings").json()["cost_per_generation"] == 1  # now cached
    row = generation_settings_get()
    form = {
        "default_model": row.default_model, "allowed_sizes": '["512x512"]', "steps": 25, "max_steps": 50,
        "guidance": 6.5, "cost_per_generation": 4, "max_prompt_length": 200, "enabled": "on",
    }
    response = staff.post(f"/admin/generation/generationsettings/{row.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    body = alice.get("/api/generation/settings").json()
    assert body["cost_per_generation"] == 4 and body["allowed_sizes"] == ["512x512"] and body["max_steps"] == 50
    assert alice.post("/api/generations", {"prompt": "x"}, format="json").json()["cost"] == 4
    assert User.objects.get(pk=user.id).coin_balance == 26


def test_character_edit_in_admin_reaches_the_api(staff, alice, characters):
    assert alice.get("/api/characters/luna").json()["display_name"] == "Luna"  # now cached
    luna = characters["luna"]
    form = {"name": "luna", "display_name": "Luna Prime", "description": luna.description,
            "greeting": luna.greeting, "persona_prompt": luna.persona_prompt, "avatar_url": "",
            "is_active": "on", "sort_order": 1}
    response = staff.post(f"/admin/characters/character/{luna.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    assert alice.get("/api/characters/luna").json()["display_name"] == "Luna Prime"
    assert "Luna Prime" in [c["display_name"] for c in alice.get("/api/characters").json()]
