"""The admin's middleware (sessions, auth, messages) runs for the admin, not for the API."""

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory

from core.http.middleware import AuthenticationMiddleware, MessageMiddleware, SessionMiddleware


@pytest.mark.parametrize(("path", "runs"), [("/api/me", False), ("/admin/", True), ("/metrics", True)])
def test_admin_middleware_skips_only_the_api(path, runs):
    seen = {}

    def view(request):
        seen.update(session=hasattr(request, "session"), user=hasattr(request, "user"),
                    messages=hasattr(request, "_messages"))
        return HttpResponse()

    chain = SessionMiddleware(AuthenticationMiddleware(MessageMiddleware(view)))
    chain(RequestFactory().get(path))
    assert seen == {"session": runs, "user": runs, "messages": runs}


@pytest.mark.django_db
def test_the_admin_login_refuses_a_post_without_its_csrf_token():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/admin/login/", {"username": "a@example.com", "password": "x"})
    assert response.status_code == 403
    form = client.get("/admin/login/")
    assert form.status_code == 200 and "csrftoken" in form.cookies
