"""The admin as a newcomer meets it: a "View site" that leads somewhere, a favicon, objects named
by what they are, no "Add" where adding by hand makes no sense, sizes as checkboxes."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


def test_view_site_leads_to_the_api_docs(staff):
    page = staff.get("/admin/").content.decode()
    assert 'href="/api/docs"' in page
    assert Client().get("/api/docs").status_code == 200


def test_favicon_is_served():
    response = Client().get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content).startswith(b"\x00\x00\x01\x00")  # an ICO file


def test_objects_are_named_by_what_they_are(staff, user):
    from accounts import services as accounts_services
    from subscriptions.models import Subscription

    subscription = Subscription.objects.select_related("user", "plan").get(user=user)
    assert str(subscription) == f"alice@example.com: {subscription.plan.name} ({subscription.status})"
    entry = accounts_services.coins_apply(user_id=user.id, amount=5, reason="grant", reference="t")
    assert str(entry) == "alice@example.com: +5 coins (grant)"
    page = staff.get(f"/admin/subscriptions/subscription/{subscription.pk}/change/").content.decode()
    assert f"alice@example.com: {subscription.plan.name}" in page


@pytest.mark.parametrize("model", ["core/pendinginvalidation", "chat/chatsession", "generation/generation"])
def test_no_add_where_rows_come_from_the_service_itself(staff, model):
    assert staff.get(f"/admin/{model}/add/").status_code == 403
    assert f'href="/admin/{model}/add/"' not in staff.get(f"/admin/{model}/").content.decode()


def test_allowed_sizes_are_checkboxes_and_saved_as_a_list(staff):
    from generation.models import GenerationSettings
    from generation.selectors import generation_settings_get

    generation_settings_get()
    settings_row = GenerationSettings.objects.get()
    page = staff.get(f"/admin/generation/generationsettings/{settings_row.pk}/change/").content.decode()
    assert 'type="checkbox" name="allowed_sizes" value="1792x1024"' in page
    form = {field: getattr(settings_row, field) for field in
            ("default_model", "steps", "max_steps", "guidance", "cost_per_generation", "max_prompt_length")}
    response = staff.post(f"/admin/generation/generationsettings/{settings_row.pk}/change/",
                          {**form, "enabled": "on", "allowed_sizes": ["512x512", "1024x1024"]})
    assert response.status_code == 302, response.content.decode()[:3000]
    settings_row.refresh_from_db()
    assert settings_row.allowed_sizes == ["512x512", "1024x1024"]
    refused = staff.post(f"/admin/generation/generationsettings/{settings_row.pk}/change/",
                         {**form, "enabled": "on", "allowed_sizes": ["13x13"]})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
