"""The cached-read lane (core.http.lane) against the real private Redis and PostgreSQL: a warm GET of
every cached endpoint answers exactly what DRF's full path answers (status, body, headers), runs
no SQL and skips DRF's dispatch; whatever the lane does not serve (no token, a revoked one, a 404,
a query string, another Accept, HEAD) takes the full path and gets the full path's answer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import IsAdminUser
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from accounts.apis import CoinsApi, PasswordApi, TokenApi
from core.http.lane import lane_eligible

pytestmark = pytest.mark.django_db(transaction=True)

CACHED_URLS = [
    "/api/me",
    "/api/me/coins",
    "/api/subscription",
    "/api/subscription/stats",
    "/api/characters",
    "/api/characters/luna",
    "/api/generation/settings",
    "/api/chat/luna/sessions/s1/messages",
]
SHARED_URLS = ["/api/characters", "/api/characters/luna", "/api/generation/settings"]


@pytest.fixture
def world(user, alice, characters, redis_server):
    """alice with a chat session 's1' with luna, then an empty cache."""
    assert alice.post("/api/chat/luna/sessions/s1/messages", {"content": "hello"}, format="json").status_code == 202
    redis_server.wipe()
    return SimpleNamespace(user=user, client=alice)


@pytest.fixture
def dispatched(monkeypatch):
    """The paths DRF's dispatch handled, in order."""
    seen: list[str] = []
    original = APIView.dispatch

    def spy(self, request, *args, **kwargs):
        seen.append(request.path)
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(APIView, "dispatch", spy)
    return seen


def _answer(client, url: str, **headers) -> tuple[int, bytes, dict[str, str]]:
    response = client.get(url, **headers)
    return response.status_code, response.content, {k: v for k, v in response.headers.items() if k != "X-Request-ID"}


def _views(resolver: URLResolver):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _views(entry)
        elif isinstance(entry, URLPattern):
            view = getattr(entry.callback, "view_class", None) or getattr(entry.callback, "cls", None)
            if view is not None:
                yield view


def test_every_view_that_declares_its_cache_reads_is_served_by_the_lane():
    declared = {view for view in _views(get_resolver()) if getattr(view, "cache_reads", None) is not None}
    assert declared, "no view declares cache_reads"
    assert {view.__name__ for view in declared if not lane_eligible(view)} == set()


@pytest.mark.parametrize("view", [
    TokenApi,  # throttled
    PasswordApi,  # declares no cache reads
    type("ThrottledCoins", (CoinsApi,), {"throttle_classes": [AnonRateThrottle]}),
    type("StaffCoins", (CoinsApi,), {"permission_classes": [IsAdminUser]}),
    type("CustomDispatch", (CoinsApi,), {"dispatch": lambda self, *a, **k: APIView.dispatch(self, *a, **k)}),
], ids=lambda v: v.__name__)
def test_a_view_drf_does_more_for_is_left_to_drf(view):
    assert not lane_eligible(view)


@pytest.mark.parametrize("url", CACHED_URLS)
def test_a_warm_get_is_answered_by_the_lane_as_the_full_path_answers_it(
    url, world, dispatched, settings, django_assert_num_queries
):
    assert world.client.get(url).status_code == 200  # fills the keys
    dispatched.clear()
    with django_assert_num_queries(0):
        lane = _answer(world.client, url)
    assert dispatched == []
    settings.CACHED_READ_LANE = False
    full = _answer(world.client, url)
    assert dispatched == [url]
    assert lane[0] == 200
    assert lane == full


@pytest.mark.parametrize("url", SHARED_URLS)
def test_a_revalidation_is_answered_by_the_lane_with_the_same_304(url, world, dispatched, settings):
    etag = world.client.get(url)["ETag"]
    dispatched.clear()
    lane = _answer(world.client, url, HTTP_IF_NONE_MATCH=etag)
    assert dispatched == []
    settings.CACHED_READ_LANE = False
    assert lane == _answer(world.client, url, HTTP_IF_NONE_MATCH=etag)
    assert lane[0] == 304


def test_a_cold_get_is_served_by_the_lane_and_fills_the_keys(world, dispatched, redis_raw):
    response = world.client.get("/api/me/coins")
    assert response.status_code == 200
    assert response.json() == {"balance": 30}
    assert dispatched == []
    assert redis_raw.exists(f"user:coins:{world.user.id}")


def test_a_token_revoked_by_a_password_change_is_refused_through_the_full_path(world, client_for, dispatched, settings):
    from accounts.services import user_change_password
    from tests.support.fixtures import PASSWORD

    url = "/api/me/coins"
    assert world.client.get(url).status_code == 200  # warm: the lane holds nothing of its own
    user_change_password(user_id=world.user.id, current_password=PASSWORD, new_password="another-horse-battery-7")
    dispatched.clear()
    lane = _answer(world.client, url)
    assert lane[0] == 401
    assert b"token_revoked" in lane[1]
    assert dispatched == [url]
    settings.CACHED_READ_LANE = False
    assert _answer(world.client, url) == lane


def test_a_deactivated_user_is_refused_through_the_full_path(world, dispatched):
    from accounts.models import User

    url = "/api/subscription"
    assert world.client.get(url).status_code == 200
    user = User.objects.get(pk=world.user.id)
    user.is_active = False
    user.save()
    dispatched.clear()
    response = world.client.get(url)
    assert response.status_code == 401
    assert response.json()["code"] == "user_inactive"
    assert dispatched == [url]


@pytest.mark.parametrize(("url", "headers", "status"), [
    ("/api/me/coins", {"HTTP_AUTHORIZATION": None}, 401),  # no token: DRF's 401 with WWW-Authenticate
    ("/api/me/coins", {"HTTP_AUTHORIZATION": "Bearer not-a-jwt"}, 401),
    ("/api/chat/nobody/sessions/s1/messages", {}, 404),  # the view's NotFound, rendered by DRF
    ("/api/chat/luna/sessions/s1/messages?limit=5", {}, 200),  # a query string: the full path
    ("/api/characters", {"HTTP_ACCEPT": "text/html"}, 406),  # negotiation is DRF's
    ("/api/characters", {"HTTP_ACCEPT": "application/json; indent=4"}, 200),
], ids=["no-token", "bad-token", "unknown-character", "query-string", "html", "json-params"])
def test_what_the_lane_does_not_serve_gets_the_full_paths_answer(url, headers, status, world, api, dispatched, settings):
    world.client.get(url.partition("?")[0])  # warm what can be warmed
    client = world.client
    if "HTTP_AUTHORIZATION" in headers:  # a client without alice's credentials
        client, headers = api, {k: v for k, v in headers.items() if v is not None}
    dispatched.clear()
    lane = _answer(client, url, **headers)
    assert lane[0] == status
    assert dispatched == [url.partition("?")[0]]
    settings.CACHED_READ_LANE = False
    assert _answer(client, url, **headers) == lane


def test_head_takes_the_full_path(world, dispatched):
    world.client.get("/api/characters")
    dispatched.clear()
    response = world.client.head("/api/characters")
    assert response.status_code == 200
    assert dispatched == ["/api/characters"]


SEEN_MATCHES: list[str | None] = []


class RecordMatch:
    """Outer middleware: what request.resolver_match says once the response is made."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        SEEN_MATCHES.append(match.url_name if match else None)
        return response


def test_the_lane_sets_the_resolver_match_as_djangos_handler_does(world, client_for, dispatched, settings):
    settings.MIDDLEWARE = ["core.tests.test_lane.RecordMatch", *settings.MIDDLEWARE]
    client = client_for(world.user)  # a new client loads the middleware above
    client.get("/api/me/coins")
    SEEN_MATCHES.clear()
    dispatched.clear()
    assert client.get("/api/me/coins").status_code == 200
    assert dispatched == []
    settings.CACHED_READ_LANE = False
    assert client.get("/api/me/coins").status_code == 200
    assert SEEN_MATCHES[0] == SEEN_MATCHES[1] is not None
