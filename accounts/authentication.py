"""JWT authentication without SQL: the token names the user, ``user:email:{email}`` holds them."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from django.conf import settings
from django.core.signals import setting_changed
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings

from core import metrics
from core.cache.api import Payload, normalize_email, planned_reads, read_ahead

from .cache import USER_EMAIL
from .selectors import user_payload_by_id, user_profile_cached


class CachedUser:
    """The authenticated user as the cache knows it: plain data, no model instance."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, profile: dict, payload: Payload) -> None:
        self.profile = profile
        self.payload = payload  # the /api/me body, already in hand
        self.id = self.pk = profile["id"]
        self.email = profile["email"]
        self.is_active = profile["is_active"]
        self.is_staff = profile["is_staff"]

    def __str__(self) -> str:
        return self.email


class ValidatedTokens:
    """Access tokens this process has validated, by their raw bytes: a repeat request skips PyJWT's
    decode and signature check (~120 us). Bounded (least recently used goes first), and an entry
    serves only until the token's ``exp`` (plus the configured leeway, as SimpleJWT checks it).
    Only the token is remembered: the user's ``session_version`` and ``is_active`` are still
    checked on every request (``get_user``), so revocation works as without it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._tokens: OrderedDict[bytes, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, raw: bytes):
        with self._lock:
            entry = self._tokens.get(raw)
            if entry is None:
                return None
            if time.time() >= entry[0]:
                del self._tokens[raw]
                return None
            self._tokens.move_to_end(raw)
            return entry[1]

    def put(self, raw: bytes, token) -> None:
        exp = token.get("exp")
        if not self.size or not isinstance(exp, int | float):
            return
        until = exp + token.get_token_backend().get_leeway().total_seconds()
        with self._lock:
            self._tokens[raw] = (until, token)
            self._tokens.move_to_end(raw)
            while len(self._tokens) > self.size:
                self._tokens.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


VALIDATED_TOKENS = ValidatedTokens(settings.JWT_VALIDATED_CACHE_SIZE)
_TOKEN_HIT = metrics.jwt_validation_cache.labels(result="hit")
_TOKEN_MISS = metrics.jwt_validation_cache.labels(result="miss")


def _forget_tokens(*, setting: str, **kwargs) -> None:
    # A new signing key, lifetime or cache size: tokens validated under the old settings are not.
    if setting in ("SIMPLE_JWT", "SECRET_KEY", "JWT_VALIDATED_CACHE_SIZE"):
        VALIDATED_TOKENS.size = settings.JWT_VALIDATED_CACHE_SIZE
        VALIDATED_TOKENS.clear()


setting_changed.connect(_forget_tokens)


class CachedJWTAuthentication(JWTAuthentication):
    """A view names the families its GET reads (``cache_reads``, see core.cache.readahead): they
    are read together with the user's key in one round trip and left on
    ``request.cache_readahead`` for the view's selectors."""

    def authenticate(self, request):
        refused = getattr(request, "auth_refused", None)  # by the cached-read lane, this request
        if refused is not None:
            raise refused
        header = self.get_header(request)
        raw_token = None if header is None else self.get_raw_token(header)
        if raw_token is None:
            return None
        validated_token = VALIDATED_TOKENS.get(raw_token)
        if validated_token is None:
            _TOKEN_MISS.inc()
            validated_token = self.get_validated_token(raw_token)
            VALIDATED_TOKENS.put(raw_token, validated_token)
        else:
            _TOKEN_HIT.inc()
        return self.get_user(validated_token, request), validated_token

    def get_user(self, validated_token, request=None) -> CachedUser:
        try:
            user_id = int(validated_token[api_settings.USER_ID_CLAIM])
        except (KeyError, TypeError, ValueError):
            raise exceptions.AuthenticationFailed("Token has no valid user.", code="token_not_valid") from None
        email = validated_token.get("email")
        readahead = _read_ahead(request, user_id, email) if isinstance(email, str) else None
        if request is not None:
            request.cache_readahead = readahead
        payload = user_profile_cached(email=email, user_id=user_id, readahead=readahead) if isinstance(email, str) else None
        profile = payload.data() if payload is not None else None
        if profile is None or profile["id"] != user_id:
            # The email in the token is no longer this user's (it changed): look up by id.
            profile = user_payload_by_id(user_id=user_id)
            payload = Payload.of(profile)
        if profile is None or not profile["is_active"]:
            raise exceptions.AuthenticationFailed("User not found or inactive.", code="user_inactive")
        if validated_token.get("sv") != profile["session_version"]:
            raise exceptions.AuthenticationFailed("Token issued before a password change.", code="token_revoked")
        return CachedUser(profile, payload)


def _read_ahead(request, user_id: int, email: str) -> dict | None:
    if request is None or request.method != "GET":
        return None
    context = getattr(request, "parser_context", None) or {}
    targets = planned_reads(context.get("view"), request, user_id=user_id, url_kwargs=context.get("kwargs", {}))
    if not targets:
        return None
    return read_ahead((USER_EMAIL, {"email": normalize_email(email), "user_id": user_id}), *targets)


class CachedJWTScheme(OpenApiAuthenticationExtension):
    """OpenAPI: the bearer JWT scheme (so /api/docs can authorise and the schema declares it)."""

    target_class = CachedJWTAuthentication
    name = "jwtAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="AUTHORIZATION", token_prefix="Bearer",
                                                   bearer_format="JWT")
