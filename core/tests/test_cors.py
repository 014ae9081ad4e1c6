"""CORS for a browser front end on another origin: off by default, origins from the environment."""

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db

ORIGIN = "https://app.example.com"


def test_off_by_default(client):
    from django.conf import settings

    assert settings.CORS_ALLOWED_ORIGINS == []
    response = client.get("/api/plans", HTTP_ORIGIN=ORIGIN)
    assert "Access-Control-Allow-Origin" not in response
    # Off costs nothing: no Vary on a header that can never be answered.
    assert "origin" not in response.get("Vary", "").lower()


@override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN])
def test_a_listed_origin_may_call_the_api(client, plans):
    response = client.get("/api/plans", HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-request-id" in response["Access-Control-Expose-Headers"].lower()
    preflight = client.options("/api/me", HTTP_ORIGIN=ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="PATCH",
                               HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type")
    assert preflight.status_code == 200
    assert "authorization" in preflight["Access-Control-Allow-Headers"].lower()
    assert "PATCH" in preflight["Access-Control-Allow-Methods"]


@override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN])
def test_other_origins_and_non_api_paths_get_no_cors_headers(client, plans):
    assert "Access-Control-Allow-Origin" not in client.get("/api/plans", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in client.get("/admin/login/", HTTP_ORIGIN=ORIGIN)
