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
        "default_model": row.default_model, "allowed_sizes": ["512x512"], "steps": 25, "max_steps": 50,
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


USERS = "/admin/accounts/user/"


def adjust(staff, users, **form):
    return staff.post(USERS, {"action": "adjust_coins", "_selected_action": [u.pk for u in users], "apply": "1",
                              **form})


def test_coin_action_asks_for_amount_and_reason_first(staff, make_user):
    bob = make_user("bob@example.com", coins=5)
    before = CoinLedgerEntry.objects.count()
    page = staff.post(USERS, {"action": "adjust_coins", "_selected_action": [bob.pk]})
    assert page.status_code == 200
    assert b"bob@example.com: 5 coin(s)" in page.content and b'name="note"' in page.content
    assert CoinLedgerEntry.objects.count() == before


def test_coin_grant_writes_a_ledger_entry_with_the_reason_and_refreshes_the_cached_balance(staff, make_user,
                                                                                           client_for):
    bob, carol = make_user("bob@example.com", coins=5), make_user("carol@example.com", coins=0)
    bob_api = client_for(bob)
    assert bob_api.get("/api/me/coins").json() == {"balance": 5}  # cached
    response = adjust(staff, [bob, carol], kind="grant", amount="40", note="outage on 27 Nov")
    assert response.status_code == 302
    for user, balance in ((bob, 45), (carol, 40)):
        entry = CoinLedgerEntry.objects.filter(user=user).first()  # newest first
        assert (entry.amount, entry.reason, entry.balance_after) == (40, "grant", balance)
        assert entry.reference == "admin root@example.com: outage on 27 Nov"
    assert bob_api.get("/api/me/coins").json() == {"balance": 45}
    assert "Grant of 40 coin(s) recorded for 2 user(s)." in staff.get(USERS).content.decode()


def test_coin_refund_and_a_deduction_that_would_go_below_zero(staff, make_user):
    bob, carol = make_user("bob@example.com", coins=5), make_user("carol@example.com", coins=50)
    assert adjust(staff, [bob], kind="refund", amount="3", note="failed generation").status_code == 302
    assert CoinLedgerEntry.objects.filter(user=bob).first().reason == "refund"
    assert adjust(staff, [bob, carol], kind="deduct", amount="20", note="double grant").status_code == 302
    assert User.objects.get(pk=bob.pk).coin_balance == 8  # refused: never below zero
    assert User.objects.get(pk=carol.pk).coin_balance == 30
    entry = CoinLedgerEntry.objects.filter(user=carol).first()
    assert (entry.amount, entry.reason) == (-20, "adjustment")
    page = staff.get(USERS).content.decode()
    assert "Not deducted" in page and "bob@example.com" in page


def test_coin_action_without_a_reason_writes_nothing(staff, make_user):
    bob = make_user("bob@example.com", coins=5)
    before = CoinLedgerEntry.objects.count()
    page = adjust(staff, [bob], kind="grant", amount="10", note="")
    assert page.status_code == 200 and b"This field is required" in page.content
    assert adjust(staff, [bob], kind="grant", amount="-10", note="x").status_code == 200
    assert CoinLedgerEntry.objects.count() == before
    assert User.objects.get(pk=bob.pk).coin_balance == 5
