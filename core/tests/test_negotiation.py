"""One renderer and an Accept any renderer satisfies: no header parsing; anything else as DRF does."""

import pytest
from rest_framework.negotiation import DefaultContentNegotiation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_the_usual_accept_is_not_parsed(alice, monkeypatch, accept):
    def refuse(self, request):
        raise AssertionError("parsed")

    monkeypatch.setattr(DefaultContentNegotiation, "_get_parsed_accept_list", refuse)
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    response = alice.get("/api/me", **headers)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize(("accept", "query", "status"), [
    ("text/html", "", 406), ("", "", 406), ("application/json; indent=2", "", 200), ("*/*", "format=xml", 404),
])
def test_anything_else_is_negotiated_as_drf_does(alice, accept, query, status):
    assert alice.get("/api/me?" + query, HTTP_ACCEPT=accept).status_code == status
