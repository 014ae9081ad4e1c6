import json

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


def test_refresh_cache_action_rebuilds_the_selected_characters_and_the_list(admin_client_, characters, alice,
                                                                            redis_raw):
    from characters.models import Character

    for name in ("luna", "rex"):
        assert alice.get(f"/api/characters/{name}").status_code == 200
    assert alice.get("/api/characters").status_code == 200
    # Edited behind the cache's back (update() sends no signal): the cached values are stale.
    Character.objects.filter(name__in=["luna", "rex"]).update(greeting="Edited in SQL.")
    rex_before = redis_raw.get("character:rex")

    response = admin_client_.post(CHANGELIST, {"action": "refresh_cache", "_selected_action": [characters["luna"].pk]})
    assert response.status_code == 302
    # Rebuilt at once from the database, not merely deleted.
    assert json.loads(redis_raw.get("character:luna"))["data"]["greeting"] == "Edited in SQL."
    listed = json.loads(redis_raw.get("characters:list"))["data"]
    assert next(c for c in listed if c["name"] == "luna")["greeting"] == "Edited in SQL."
    assert redis_raw.get("character:rex") == rex_before  # not selected
    messages = admin_client_.get(CHANGELIST).content.decode()
    assert "Rebuilt 2 cache key(s) from the database: characters:list and 1 of 1 character(s)." in messages


def test_refresh_cache_action_says_what_it_did_with_an_inactive_character(admin_client_, characters, redis_raw):
    nyx = characters["nyx"]
    nyx.is_active = False
    nyx.save()
    selected = [characters["luna"].pk, nyx.pk]
    assert admin_client_.post(CHANGELIST, {"action": "refresh_cache", "_selected_action": selected}).status_code == 302
    assert redis_raw.exists("character:luna", "characters:list") == 2 and not redis_raw.exists("character:nyx")
    messages = admin_client_.get(CHANGELIST).content.decode()
    assert "1 of 2 character(s); 1 inactive, so not cached." in messages


def test_an_admin_edit_is_visible_on_the_api_at_once(admin_client_, characters, alice):
    luna = characters["luna"]
    assert alice.get("/api/characters/luna").json()["display_name"] == "Luna"  # now cached
    form = {"name": "luna", "display_name": "Luna Nova", "description": luna.description, "greeting": luna.greeting,
            "persona_prompt": luna.persona_prompt, "avatar_url": "", "is_active": "on", "sort_order": "1"}
    response = admin_client_.post(f"{CHANGELIST}{luna.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    assert alice.get("/api/characters/luna").json()["display_name"] == "Luna Nova"
    assert [c["display_name"] for c in alice.get("/api/characters").json()][0] == "Luna Nova"
