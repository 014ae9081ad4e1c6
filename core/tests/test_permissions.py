"""/api/docs serves pinned Swagger UI assets from our own static files; API_DOCS_PUBLIC decides
who may read the schema and the docs."""

import re

import pytest
from django.contrib.staticfiles import finders
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db(transaction=True)


def test_docs_load_their_assets_locally(api):
    response = api.get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    scripts = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert any(s.endswith("swagger-ui-bundle.js") for s in scripts), scripts
    for url in scripts:
        assert url.startswith("/static/"), url  # no CDN, no @latest
        assert finders.find(url.removeprefix("/static/")), url  # shipped with the pinned sidecar package
    assert "cdn.jsdelivr.net" not in html and "@latest" not in html


@pytest.mark.parametrize("path", ["/api/schema", "/api/docs"])
def test_docs_public_by_default(api, path):
    assert api.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/api/schema", "/api/docs"])
def test_docs_for_staff_only_when_not_public(settings, make_user, client_for, path):
    settings.API_DOCS_PUBLIC = False
    assert APIClient().get(path).status_code == 401
    assert client_for(make_user("pleb@example.com")).get(path).status_code == 403
    staff = make_user("staff@example.com")
    type(staff).objects.filter(pk=staff.pk).update(is_staff=True)
    assert client_for(staff).get(path).status_code == 200


def test_production_hides_the_docs_unless_told(monkeypatch):
    import importlib
    import sys

    monkeypatch.setenv("SECRET_KEY", "x" * 60)
    monkeypatch.setenv("ALLOWED_HOSTS", "example.com")
    monkeypatch.delenv("API_DOCS_PUBLIC", raising=False)
    monkeypatch.delitem(sys.modules, "config.settings.production", raising=False)
    production = importlib.import_module("config.settings.production")
    assert production.API_DOCS_PUBLIC is False
