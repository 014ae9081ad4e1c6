"""Every user, however created, starts on the free plan with its coins."""

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import User

pytestmark = pytest.mark.django_db(transaction=True)


def test_createsuperuser_gets_the_free_plan(plans, monkeypatch, api):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-admin-password-1")
    call_command("createsuperuser", interactive=False, email="root@example.com", stdout=StringIO())
    admin = User.objects.get(email="root@example.com")
    assert admin.subscription.plan.code == "free"
    assert admin.coin_balance == plans["free"].coins_per_period
    token = api.post("/api/auth/token", {"email": "root@example.com", "password": "a-long-admin-password-1"},
                     format="json").json()["access"]
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get("/api/subscription").json()["status"] == "active"


def test_a_bulk_created_user_is_not_touched(plans):
    # Fixtures and bulk loads (raw saves) start nothing: they bring their own rows.
    User.objects.bulk_create([User(email="bulk@example.com")])
    assert not hasattr(User.objects.get(email="bulk@example.com"), "subscription")
