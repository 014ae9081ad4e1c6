"""Logout: one session (its refresh token) or every session of the user, short of a password change."""

import pytest
from rest_framework.test import APIClient

from tests.support.fixtures import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def login(user) -> dict:
    response = APIClient().post("/api/auth/token", {"email": user.email, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    return response.json()


def refresh(tokens) -> int:
    return APIClient().post("/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json").status_code


def me(tokens) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    return client.get("/api/me").status_code


def test_logout_revokes_that_refresh_token_only(user):
    phone, laptop = login(user), login(user)
    response = APIClient().post("/api/auth/logout", {"refresh": phone["refresh"]}, format="json")
    assert response.status_code == 204
    assert refresh(phone) == 401
    assert refresh(laptop) == 200
    # Twice is fine: the session is over either way.
    assert APIClient().post("/api/auth/logout", {"refresh": phone["refresh"]}, format="json").status_code == 204


def test_logout_refuses_what_is_not_a_refresh_token(user):
    tokens = login(user)
    for bad in (tokens["access"], tokens["refresh"][:-4] + "AAAA", "nonsense"):
        response = APIClient().post("/api/auth/logout", {"refresh": bad}, format="json")
        assert response.status_code == 401, bad
        assert response.json()["code"] == "token_not_valid"
    assert APIClient().post("/api/auth/logout", {}, format="json").status_code == 400
    assert refresh(tokens) == 200


def test_logout_everywhere_refuses_every_token_issued_before(user):
    phone, laptop = login(user), login(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {phone['access']}")
    assert client.get("/api/me").status_code == 200  # cached profile with the old session version
    assert client.post("/api/auth/logout/all").status_code == 204
    for tokens in (phone, laptop):
        assert me(tokens) == 401
        assert refresh(tokens) == 401
    # The password still works: a new login starts a new session.
    again = login(user)
    assert me(again) == 200 and refresh(again) == 200


def test_logout_everywhere_needs_a_valid_access_token():
    assert APIClient().post("/api/auth/logout/all").status_code == 401
