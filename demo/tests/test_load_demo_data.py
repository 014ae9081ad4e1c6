"""load_demo_data creates what is missing and leaves what an admin changed alone."""

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import User
from characters.models import Character

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_second_run_keeps_admin_edits(plans):
    call_command("load_demo_data", stdout=StringIO())
    count = Character.objects.count()
    demo = User.objects.get(email="demo@example.com")
    assert demo.subscription.plan.code == "free"
    Character.objects.filter(name="luna").update(display_name="Luna (edited)", is_active=False)
    Character.objects.filter(name="pixel").delete()

    out = StringIO()
    call_command("load_demo_data", stdout=out)

    assert Character.objects.get(name="luna").display_name == "Luna (edited)"
    assert Character.objects.get(name="luna").is_active is False
    assert Character.objects.count() == count  # the deleted one is missing, so it is created again
    assert "1 demo character(s) created, 9 already there" in out.getvalue()
    assert User.objects.filter(email="demo@example.com").count() == 1
