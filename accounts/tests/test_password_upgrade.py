"""Django's rehash on login (a hasher whose iterations were raised) is not a password change:
the tokens of that login, and of earlier ones, stay valid."""

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from rest_framework.test import APIClient

from tests.support.fixtures import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


class FewerIterations(PBKDF2PasswordHasher):
    iterations = 1000


class MoreIterations(PBKDF2PasswordHasher):
    iterations = 2000


def login(email: str) -> dict:
    response = APIClient().post("/api/auth/token", {"email": email, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def works(tokens: dict) -> bool:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    refreshed = APIClient().post("/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    return client.get("/api/me").status_code == 200 and refreshed.status_code == 200


def test_login_after_an_iteration_upgrade_keeps_sessions(settings, make_user):
    from accounts.models import User

    settings.PASSWORD_HASHERS = [f"{__name__}.FewerIterations"]
    user = make_user("upgrade@example.com")
    before = login(user.email)
    version = User.objects.get(pk=user.pk).session_version

    settings.PASSWORD_HASHERS = [f"{__name__}.MoreIterations"]
    after = login(user.email)  # Django rehashes the password with 2000 iterations here
    row = User.objects.get(pk=user.pk)
    assert row.password.startswith("pbkdf2_sha256$2000$")
    assert row.session_version == version
    assert works(after)
    assert works(before)


def test_a_real_change_through_a_partial_save_still_revokes(make_user):
    from accounts.models import User

    user = make_user("partial@example.com")
    version = user.session_version
    user.set_password("another-passw0rd-1")
    user.save(update_fields=["password"])
    assert User.objects.get(pk=user.pk).session_version == version + 1
