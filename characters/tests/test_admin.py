import pytest
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/characters/character/"


@pytest.fixture
def admin_client_(characters):
    from accounts.models import User

    admin = User.objects.create_superuser(email="root@example.com", password="x-long-password-1")
    client = Client()
    client.force_login(admin)
    return client


def test_refresh_cache_action_deletes_the_selected_characters_and_the_list(admin_client_, characters, alice, redis_raw):
    for name in ("luna", "rex"):
        assert alice.get(f"/api/characters/{name}").status_code == 200
    assert alice.get("/api/characters").status_code == 200
    assert redis_raw.exists("character:luna", "character:rex", "characters:list") == 3

    response = admin_client_.post(CHANGELIST, {"action": "refresh_cache", "_selected_action": [characters["luna"].pk]})
    assert response.status_code == 302
    assert not redis_raw.exists("character:luna")
    assert not redis_raw.exists("characters:list")
    assert redis_raw.exists("character:rex")  # not selected
    messages = admin_client_.get(CHANGELIST).content.decode()
    assert "Cache refreshed for 1 character(s)" in messages


def test_an_admin_edit_is_visible_on_the_api_at_once(admin_client_, characters, alice):
    luna = characters["luna"]
    assert alice.get("/api/characters/luna").json()["display_name"] == "Luna"  # now cached
    form = {"name": "luna", "display_name": "Luna Nova", "description": luna.description, "greeting": luna.greeting,
            "persona_prompt": luna.persona_prompt, "avatar_url": "", "is_active": "on", "sort_order": "1"}
    response = admin_client_.post(f"{CHANGELIST}{luna.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    assert alice.get("/api/characters/luna").json()["display_name"] == "Luna Nova"
    assert [c["display_name"] for c in alice.get("/api/characters").json()][0] == "Luna Nova"
