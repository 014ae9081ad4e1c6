"""An unknown /api/ path answers the API's JSON 404 in every mode, DEBUG's included."""

import pytest
from django.test import Client


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/nope", "/api/characters/a/b/c", "/api/", "/api/chat/x/sessions/ bad /messages"])
def test_unknown_api_paths_answer_json(client, settings, debug, path):
    settings.DEBUG = debug
    response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


@pytest.mark.django_db
def test_known_paths_are_unaffected(client, settings):
    settings.DEBUG = True
    assert client.get("/api/health/live").status_code == 200



@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_writes_to_unknown_paths_get_the_json_404_not_a_csrf_page(method):
    browserish = Client(enforce_csrf_checks=True)
    response = getattr(browserish, method)("/api/payments/offline/checkout/%01%C2%A1", data="{}",
                                           content_type="application/json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}
