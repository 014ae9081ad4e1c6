"""The cached-read lane: a warm GET answered without DRF's dispatch.

A view that names its cache reads (``cache_reads``) answers its usual GET from bytes already in
Redis. Through DRF that answer costs more than the read: a ``Request`` wrapper, content
negotiation, authenticator, permission and throttle lists, ``finalize_response``, and the
admin's middleware below this one. This middleware runs the same authenticator and the same
view method on the plain ``HttpRequest`` instead, and gives the view's own response back.

It serves only what the full path would answer with that same response: a GET without a query
string, an ``Accept`` the one JSON renderer satisfies, a view whose only gate is the
authenticator plus ``IsAuthenticated`` (no throttles, no other permissions), a valid token, and
a view that returns a plain ``HttpResponse`` (the cached bytes). Anything else (no or bad
token, a revoked session, a 404, an error, any other request) goes down the full path as if the
lane were not there, so DRF's answers and errors are unchanged. Authentication itself is the
same code either way (``session_version`` and ``is_active`` checked on every request).

``CACHED_READ_LANE`` turns it off.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.signals import setting_changed
from django.http import Http404, HttpResponse
from django.urls import Resolver404, ResolverMatch, resolve
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

_JSON = JSONRenderer.media_type


class _Route:
    """A URL the lane can serve: its match (view class, URL kwargs) and the headers DRF would add."""

    __slots__ = ("match", "view_class", "authenticator", "allow")

    def __init__(self, match: ResolverMatch, view_class: type) -> None:
        self.match = match
        self.view_class = view_class
        self.authenticator = view_class.authentication_classes[0]()
        view = view_class()
        view.setup(None)  # as per request: a view with get() also answers HEAD
        self.allow = ", ".join(view.allowed_methods)  # DRF's Allow header


def lane_eligible(view_class: Any) -> bool:
    """Whether DRF would do nothing for this view's GET beyond what the lane does."""
    return bool(
        getattr(view_class, "cache_reads", None) is not None  # declared, even empty (/api/me)
        and hasattr(view_class, "get")
        and all(getattr(view_class, name) is getattr(APIView, name) for name in ("dispatch", "initial", "finalize_response"))
        and len(view_class.authentication_classes) == 1
        and list(view_class.permission_classes) == [IsAuthenticated]
        and not view_class.throttle_classes
        and [r.media_type for r in view_class.renderer_classes] == [_JSON]
        and view_class.versioning_class is None
    )


@lru_cache(maxsize=4096)
def _route(path: str) -> _Route | None:
    try:
        match = resolve(path)
    except Resolver404:
        return None
    view_class = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
    if view_class is None or match.args or getattr(match.func, "initkwargs", None) or not lane_eligible(view_class):
        return None
    return _Route(match, view_class)


def _forget_routes(*, setting: str, **kwargs) -> None:
    if setting in ("ROOT_URLCONF", "REST_FRAMEWORK"):
        _route.cache_clear()


setting_changed.connect(_forget_routes)


class CachedReadLaneMiddleware:
    """Place it after the middleware every API response needs (request ID, security headers,
    metrics, host validation, X-Frame-Options); what follows it is the admin's."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.CACHED_READ_LANE and request.method == "GET":
            response = self.serve(request)
            if response is not None:
                return response
        return self.get_response(request)

    def serve(self, request) -> HttpResponse | None:
        meta = request.META
        accept = meta.get("HTTP_ACCEPT", "*/*")
        if meta.get("QUERY_STRING") or (accept != "*/*" and accept != _JSON) or "HTTP_AUTHORIZATION" not in meta:
            return None
        route = _route(request.path_info)
        if route is None:
            return None
        request.resolver_match = route.match  # as Django's handler sets it (logging, metrics)
        kwargs = route.match.kwargs
        view = route.view_class()
        view.setup(request, **kwargs)
        view.format_kwarg = None
        # What authentication reads ahead depends on the view, as under DRF (see planned_reads).
        request.parser_context = {"view": view, "args": (), "kwargs": kwargs}
        try:
            authenticated = route.authenticator.authenticate(request)
            if authenticated is None:
                return None
            request.user, request.auth = authenticated
            response = view.get(request, **kwargs)
        except exceptions.AuthenticationFailed as exc:
            # DRF's 401 with its headers and body: the full path raises this same refusal
            # (``request.auth_refused``) instead of checking the token a second time.
            request.auth_refused = exc
            return None
        except (exceptions.APIException, Http404, PermissionDenied):
            return None  # DRF's answer (404, ...) with its headers and body: take the full path
        if isinstance(response, Response) or not isinstance(response, HttpResponse):
            return None  # it needs DRF's rendering
        response["Allow"] = route.allow
        return response
