"""Validated tokens are remembered per process (by the raw token, until exp); the user's
revocation state is still checked on every request."""

import time

import pytest
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.tokens import AccessToken

from accounts import authentication
from accounts.authentication import VALIDATED_TOKENS, ValidatedTokens
from accounts.models import User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def decodes(monkeypatch):
    """How many times PyJWT decoded a token."""
    calls = []
    original = TokenBackend.decode

    def counted(self, token, verify=True):
        calls.append(token)
        return original(self, token, verify)

    monkeypatch.setattr(TokenBackend, "decode", counted)
    VALIDATED_TOKENS.clear()
    return calls


def test_a_repeat_request_does_not_decode_the_token_again(alice, decodes):
    assert alice.get("/api/me").status_code == 200
    assert alice.get("/api/me/coins").status_code == 200
    assert len(decodes) == 1


def test_a_remembered_token_is_decoded_again_once_expired(alice, decodes, monkeypatch):
    assert alice.get("/api/me").status_code == 200
    later = AccessToken(decodes[0])["exp"] + 1  # (decodes it once more)
    monkeypatch.setattr(authentication.time, "time", lambda: later)
    alice.get("/api/me")  # SimpleJWT's own clock still accepts it; the point is that it was checked
    assert len(decodes) == 3


def test_deactivation_refuses_a_remembered_token(alice, user, decodes):
    assert alice.get("/api/me").status_code == 200
    User.objects.filter(pk=user.id).update(is_active=False)
    from accounts.cache import USER_EMAIL
    from core.cache.api import invalidate

    invalidate((USER_EMAIL, {"email": user.email, "user_id": user.id}))
    response = alice.get("/api/me")
    assert response.status_code == 401
    assert response.json()["code"] == "user_inactive"
    assert len(decodes) == 1  # the token came from memory, the user's state did not


def test_a_password_change_refuses_a_remembered_token(alice, user, decodes):
    from tests.support.fixtures import PASSWORD

    assert alice.get("/api/me").status_code == 200
    assert alice.post("/api/me/password", {"current_password": PASSWORD, "new_password": "a-brand-new-passw0rd"},
                      format="json").status_code == 200
    response = alice.get("/api/me")
    assert response.status_code == 401
    assert response.json()["code"] == "token_revoked"


def test_a_bad_token_is_not_remembered(api, plans, decodes):
    api.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
    assert api.get("/api/me").status_code == 401
    assert api.get("/api/me").status_code == 401
    assert len(decodes) == 2


class FakeToken(dict):
    def get_token_backend(self):
        return TokenBackend("HS256", "k", leeway=5)


def test_the_memory_is_bounded_and_honours_exp_with_the_leeway(monkeypatch):
    tokens = ValidatedTokens(2)
    now = time.time()
    for raw in (b"a", b"b", b"c"):
        tokens.put(raw, FakeToken(exp=now + 10))
    assert tokens.get(b"a") is None  # least recently used, evicted
    assert tokens.get(b"b") is not None and tokens.get(b"c") is not None
    monkeypatch.setattr(authentication.time, "time", lambda: now + 14)
    assert tokens.get(b"b") is not None  # within the leeway
    monkeypatch.setattr(authentication.time, "time", lambda: now + 15)
    assert tokens.get(b"b") is None


def test_size_zero_turns_the_memory_off(alice, decodes, settings):
    assert alice.get("/api/me").status_code == 200
    settings.JWT_VALIDATED_CACHE_SIZE = 0
    assert alice.get("/api/me").status_code == 200
    assert alice.get("/api/me").status_code == 200
    assert len(decodes) == 3


def _token_memory_counts(client) -> dict[str, float]:
    """jwt_validation_cache_total by result, as a Prometheus scrape sees it."""
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    return {sample.labels["result"]: sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples if sample.name == "jwt_validation_cache_total"}


def test_metrics_count_remembered_and_decoded_tokens(alice, decodes, client):
    before = _token_memory_counts(client)
    for _ in range(3):
        assert alice.get("/api/me").status_code == 200
    after = _token_memory_counts(client)
    assert after.get("miss", 0) - before.get("miss", 0) == 1
    assert after.get("hit", 0) - before.get("hit", 0) == 2
