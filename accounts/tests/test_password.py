"""A password change ends every session: access and refresh tokens issued before it are refused."""

import pytest

from tests.support.fixtures import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

NEW = "a-brand-new-passw0rd"


@pytest.fixture
def tokens(api, user):
    response = api.post("/api/auth/token", {"email": user.email, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    return response.json()


def bearer(api, access):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return api


def test_changing_the_password_refuses_older_tokens_and_returns_new_ones(api, tokens, client_for, user):
    old = bearer(api, tokens["access"])
    assert old.get("/api/me").status_code == 200  # cached profile, old version

    response = old.post("/api/me/password", {"current_password": PASSWORD, "new_password": NEW}, format="json")
    assert response.status_code == 200
    fresh = response.json()

    refused = old.get("/api/me")
    assert refused.status_code == 401
    assert refused.json()["code"] == "token_revoked"
    from rest_framework.test import APIClient

    anonymous = APIClient()
    refresh = anonymous.post("/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert refresh.status_code == 401
    assert anonymous.post("/api/auth/token/refresh", {"refresh": fresh["refresh"]}, format="json").status_code == 200

    assert bearer(APIClient(), fresh["access"]).get("/api/me").status_code == 200
    login = anonymous.post("/api/auth/token", {"email": user.email, "password": NEW}, format="json")
    assert login.status_code == 200
    assert anonymous.post("/api/auth/token", {"email": user.email, "password": PASSWORD},
                          format="json").status_code == 401


def test_wrong_current_password_changes_nothing(api, tokens):
    client = bearer(api, tokens["access"])
    response = client.post("/api/me/password", {"current_password": "not-it-at-all", "new_password": NEW},
                           format="json")
    assert response.status_code == 400
    assert "current_password" in response.json()["errors"]
    assert client.get("/api/me").status_code == 200


def test_weak_new_password_is_refused(api, tokens):
    client = bearer(api, tokens["access"])
    response = client.post("/api/me/password", {"current_password": PASSWORD, "new_password": "12345678"},
                           format="json")
    assert response.status_code == 400
    assert "new_password" in response.json()["errors"]
    assert client.get("/api/me").status_code == 200


def test_a_password_set_outside_the_api_also_refuses_older_tokens(api, tokens, user):
    from accounts.models import User

    client = bearer(api, tokens["access"])
    assert client.get("/api/me/coins").status_code == 200
    row = User.objects.get(pk=user.pk)
    row.set_password(NEW)  # as the admin's password form does
    row.save()
    assert client.get("/api/me/coins").status_code == 401


def test_refresh_of_a_deleted_user_is_401_not_500(api, tokens, user):
    from accounts.models import User

    User.objects.filter(pk=user.pk).delete()
    response = api.post("/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 401
