"""Hostile and broken requests: always a JSON 4xx with a ``detail``, never a 5xx, nothing written."""

import json

import pytest
from django.conf import settings

from tests.support.fixtures import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

WRITE_ENDPOINTS = [
    ("post", "/api/auth/register"),
    ("post", "/api/auth/token"),
    ("post", "/api/auth/token/refresh"),
    ("patch", "/api/me"),
    ("post", "/api/subscription"),
    ("post", "/api/generations"),
    ("post", "/api/chat/luna/sessions/s1/messages"),
]


def row_counts() -> dict:
    from accounts.models import CoinLedgerEntry, User
    from chat.models import ChatMessage, ChatSession
    from generation.models import Generation
    from subscriptions.models import Subscription

    return {model.__name__: model.objects.count()
            for model in (User, CoinLedgerEntry, Subscription, Generation, ChatSession, ChatMessage)}


@pytest.fixture
def state(alice, user, characters):
    """alice, with the rows that exist before the bad request."""
    return row_counts()


def send(client, method, path, body: bytes | str, content_type="application/json", **extra):
    return getattr(client, method)(path, data=body, content_type=content_type, **extra)


def assert_json_4xx(response, *statuses):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and body.get("detail"), body


MALFORMED = [b"{", b'{"prompt": }', b"not json", b'{"a": 1}}', b"\xff\xfe\x00", b"{'single': 'quotes'}",
             b'{"prompt": NaN}', b'{"steps": Infinity}', b"null"]


# One test per endpoint, looping over the bodies: a transactional test's set-up costs most of its time.
@pytest.mark.parametrize("method, path", WRITE_ENDPOINTS)
def test_malformed_json(alice, state, method, path):
    for body in MALFORMED:
        response = send(alice, method, path, body)
        assert_json_4xx(response, 400)
    assert row_counts() == state


@pytest.mark.parametrize("method, path", [e for e in WRITE_ENDPOINTS if e[0] == "post"])
def test_empty_body_is_400(alice, state, method, path):
    response = send(alice, method, path, b"")
    assert_json_4xx(response, 400)
    assert row_counts() == state


WRONG_TYPES = [
    ("text/plain", "prompt=x"),
    ("application/x-www-form-urlencoded", "prompt=x&email=a%40b.c&password=xyzxyzxyz1&content=hi&plan=plus"),
    ("application/xml", "<prompt>x</prompt>"),
    ("multipart/form-data; boundary=zz", "--zz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--zz--"),
]


@pytest.mark.parametrize("method, path", WRITE_ENDPOINTS)
def test_wrong_content_type_is_415(alice, state, method, path):
    for content_type, body in WRONG_TYPES:
        response = send(alice, method, path, body, content_type=content_type)
        assert_json_4xx(response, 415)
    assert row_counts() == state


@pytest.mark.parametrize("method, path", WRITE_ENDPOINTS)
def test_json_that_is_not_an_object(alice, state, method, path):
    for body in ["[]", '[{"prompt": "x"}]', '"a string"', "42", "true"]:
        response = send(alice, method, path, body)
        assert_json_4xx(response, 400)
    assert row_counts() == state


def test_huge_and_negative_numbers(alice, state):
    bodies = [
        '{"prompt": "x", "steps": 1%s}' % ("0" * 100),
        '{"prompt": "x", "seed": 1%s}' % ("0" * 100),
        '{"prompt": "x", "guidance": 1%s}' % ("0" * 100),
        '{"prompt": "x", "steps": -1%s}' % ("0" * 100),
        '{"prompt": "x", "steps": -1}',
        '{"prompt": "x", "seed": -1}',
        '{"prompt": "x", "guidance": -0.5}',
        '{"prompt": "x", "steps": 1e400}',  # parses as float infinity
        '{"prompt": "x", "guidance": 1e400}',
        '{"prompt": "x", "guidance": -1e400}',
        '{"prompt": "x", "steps": true}',
        '{"prompt": "x", "steps": 3.7}',
    ]
    for body in bodies:
        response = send(alice, "post", "/api/generations", body)
        assert_json_4xx(response, 400)
    response = alice.post("/api/subscription", {"plan": 10**100}, format="json")
    assert_json_4xx(response, 400)
    response = alice.get("/api/chat/luna/sessions/s1/messages?before=-1")
    assert_json_4xx(response, 400)
    assert row_counts() == state


def test_number_too_long_to_parse(alice, state):
    # Python refuses int() of more than 4300 digits; that must be a 400, not a 500.
    response = send(alice, "post", "/api/generations", '{"prompt": "x", "steps": ' + "9" * 5000 + "}")
    assert_json_4xx(response, 400)
    assert row_counts() == state


NESTED = ["[" * 3000 + "]" * 3000, '{"a":' * 3000 + "1" + "}" * 3000,
          '{"prompt": ' + "[" * 3000 + "]" * 3000 + "}", '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}"]


def test_deeply_nested_json(alice, state, api):
    # Under the body limit the parser sees it (Python's json recursed into a RecursionError, a 500):
    # a 400. The last body is over the limit: refused before parsing, a 413.
    for body in NESTED:
        expected = 413 if len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE else 400
        assert_json_4xx(send(alice, "post", "/api/generations", body), expected)
        for path in ("/api/auth/token", "/api/auth/register", "/api/auth/token/refresh"):  # unauthenticated
            assert_json_4xx(send(api, "post", path, body), expected)
    assert [len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE for body in NESTED] == [False, False, False, True]
    assert row_counts() == state


@pytest.mark.parametrize("method, path", WRITE_ENDPOINTS)
def test_oversized_body(alice, state, method, path):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert limit == 64 * 1024
    body = json.dumps({"prompt": "x" * limit, "content": "y" * limit, "email": "a@b.c", "password": "p" * limit})
    response = send(alice, method, path, body)
    assert_json_4xx(response, 413)
    assert row_counts() == state


def test_body_just_under_the_limit_is_parsed(alice, state):
    body = json.dumps({"prompt": "x" * (60 * 1024)})
    response = send(alice, "post", "/api/generations", body)
    # Parsed (not 413), then refused by validation: the prompt is over max_prompt_length.
    assert_json_4xx(response, 400)
    assert "prompt" in response.json()["errors"]


def test_lying_content_length(alice, state):
    """A Content-Length above the limit is refused before the body is read."""
    response = alice.generic("POST", "/api/generations", b'{"prompt": "x"}', content_type="application/json",
                             CONTENT_LENGTH=str(10 * 1024 * 1024))
    assert_json_4xx(response, 413)
    assert row_counts() == state


def test_unknown_api_url_is_json_404(alice, characters):
    assert not settings.DEBUG
    for path in ["/api/nope", "/api/me/", "/api/characters/luna/extra", "/api/generations/1",
                 "/api/chat/luna/sessions/s1", "/api/chat/lu%20na/sessions"]:
        response = alice.get(path)
        assert response.status_code == 404, path
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["detail"]


def test_unknown_url_anonymous_is_json_404(api):
    response = api.get("/api/does/not/exist")
    assert response.status_code == 404 and response.json()["detail"]


def test_wrong_method_is_json_405(alice, state):
    for method, path in [("delete", "/api/me"), ("put", "/api/generations"), ("delete", "/api/subscription"),
                         ("get", "/api/subscription/cancel"), ("post", "/api/plans"), ("patch", "/api/characters/luna")]:
        response = getattr(alice, method)(path)
        assert_json_4xx(response, 405)
    assert row_counts() == state


@pytest.mark.parametrize("path", ["/api/generations", "/api/me/coins/history", "/api/chat/luna/sessions"])
def test_invalid_paging_queries_are_400_naming_the_parameter(alice, state, path):
    for query in ["page=0", "page=-1", "page=99999999999999999999", "page_size=-5", "page_size=abc", "page=1e3",
                  "page=%00", "page_size=100000", "page_size=0", "page=last", "page=1.0", "page_size=", "page=+1",
                  "page=" + "9" * 5000]:
        response = alice.get(f"{path}?{query}")
        assert_json_4xx(response, 400)
        assert list(response.json()["errors"]) == [query.split("=")[0]], query
    assert alice.get(f"{path}?page=1&page_size=100").status_code == 200
    assert_json_4xx(alice.get(f"{path}?page=2"), 404)  # a valid number past the end


STRICT = [  # (method, path, a valid body, the field to break) for every write endpoint
    ("post", "/api/auth/register", {"email": "new@example.com", "password": "a-good-passw0rd", "display_name": "N"},
     "display_name"),
    ("post", "/api/auth/token", {"email": "alice@example.com", "password": PASSWORD}, "password"),
    ("post", "/api/auth/token/refresh", {"refresh": "x.y.z"}, "refresh"),
    ("patch", "/api/me", {"display_name": "Alice"}, "display_name"),
    ("post", "/api/me/password", {"current_password": PASSWORD, "new_password": "a-new-passw0rd-1"}, "new_password"),
    ("post", "/api/subscription", {"plan": "plus"}, "plan"),
    ("post", "/api/generations", {"prompt": "a cat", "size": "512x512"}, "prompt"),
    ("post", "/api/chat/luna/sessions/s1/messages", {"content": "hi"}, "content"),
]


def user_rows() -> list:
    from accounts.models import User

    return list(User.objects.order_by("id").values_list("email", "password", "session_version", "display_name",
                                                        "coin_balance"))


@pytest.mark.parametrize("method, path, body, field", STRICT)
def test_wrong_types_and_unknown_fields_are_400_naming_the_field(alice, state, api, method, path, body, field):
    users = user_rows()
    client = api if path.startswith("/api/auth/") else alice
    for wrong in (12, 12.5, True, ["x"], {"x": 1}):
        response = send(client, method, path, json.dumps({**body, field: wrong}))
        assert_json_4xx(response, 400)
        assert list(response.json()["errors"]) == [field], response.json()
    response = send(client, method, path, json.dumps({**body, "is_staff": True, "coins": 1000}))
    assert_json_4xx(response, 400)
    assert sorted(response.json()["errors"]) == ["coins", "is_staff"]
    assert row_counts() == state and user_rows() == users


def test_a_body_on_an_endpoint_without_fields_is_refused_not_ignored(alice, state):
    from subscriptions.models import Subscription

    for body in ({"plan": "free"}, {"auto_renew": False}):
        response = send(alice, "post", "/api/subscription/cancel", json.dumps(body))
        assert_json_4xx(response, 400)
        assert list(response.json()["errors"]) == list(body), response.json()
    assert_json_4xx(send(alice, "post", "/api/subscription/cancel", "[]"), 400)
    assert Subscription.objects.get(user__email="alice@example.com").auto_renew is True
    assert row_counts() == state
    assert alice.post("/api/subscription/cancel", {}, format="json").status_code == 200
    assert Subscription.objects.get(user__email="alice@example.com").auto_renew is False


def test_a_malformed_generation_is_refused_and_not_charged(alice, state):
    users = user_rows()
    response = alice.post("/api/generations", {"prompt": 12, "params": "nope"}, format="json")
    assert_json_4xx(response, 400)
    assert sorted(response.json()["errors"]) == ["params", "prompt"]
    for body in ({"prompt": "x", "steps": "5"}, {"prompt": "x", "guidance": "1.5"}, {"prompt": "x", "size": 512},
                 {"prompt": "x", "size": "513x513"}, {"prompt": "x", "steps": True}, {"prompt": "x", "seed": "1"}):
        assert_json_4xx(alice.post("/api/generations", body, format="json"), 400)
    assert row_counts() == state and user_rows() == users


def test_garbage_authorization_header_is_401(api, plans):
    for header in ["Bearer", "Bearer ", "Bearer a.b.c", "Basic Zm9vOmJhcg==", "Bearer \u00e9", "Bearer " + "x" * 5000]:
        response = api.get("/api/me", HTTP_AUTHORIZATION=header)
        assert_json_4xx(response, 401)


def test_token_for_deleted_user_is_401(alice, user, redis_raw):
    """Deleting the user invalidates its cached entry through post_delete (nothing by hand here),
    so the token is refused at once rather than when the cached user expires."""
    from accounts.models import User

    assert alice.get("/api/me").status_code == 200
    assert list(redis_raw.scan_iter("user:email:*"))  # the user is cached: a warm read skips SQL
    User.objects.filter(pk=user.id).delete()
    assert not list(redis_raw.scan_iter("user:email:*"))
    response = alice.get("/api/me")
    assert_json_4xx(response, 401)


def test_unicode_and_control_characters_are_handled(alice, state):
    response = alice.post("/api/chat/luna/sessions/s1/messages", {"content": "héllo \u0000 wörld \U0001f600"},
                          format="json")
    # PostgreSQL text cannot hold NUL: refused cleanly rather than a 500.
    assert_json_4xx(response, 400)
    assert row_counts() == state
    response = alice.post("/api/chat/luna/sessions/s1/messages", {"content": "héllo wörld \U0001f600"},
                          format="json")
    assert response.status_code == 202
    assert response.json()["message"]["content"] == "héllo wörld \U0001f600"
