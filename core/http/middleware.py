import time

from corsheaders import middleware as cors
from corsheaders import signals as cors_signals
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions

from core import metrics
from core.http import request_id


class MetricsMiddleware:
    """Request latency into Prometheus by method, status class and route: the URL pattern that
    answered (`/api/characters/<slug:name>`), never the path, so the series stay bounded;
    `<unmatched>` for a path no view claims (a 404 before any view)."""

    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

    def __init__(self, get_response):
        self.get_response = get_response
        self._series = {}  # (method, status class, route) -> its bound histogram: no label lookup per request

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = "/" + match.route if match is not None and match.url_name != "api-not-found" else "<unmatched>"
        labels = (request.method if request.method in self.METHODS else "other", response.status_code // 100, route)
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = metrics.request_latency.labels(labels[0], f"{labels[1]}xx", route)
        series.observe(time.perf_counter() - started)
        return response


class PrivateByDefaultMiddleware:
    """A response to a request with credentials that says nothing about caching is per-user:
    mark it ``Cache-Control: private, no-cache`` (views that set the header keep theirs)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "HTTP_AUTHORIZATION" in request.META and not response.has_header("Cache-Control"):
            response["Cache-Control"] = "private, no-cache"
        return response


class RequestIdMiddleware:
    """Every request gets an ID: the one a trusted proxy sent in ``REQUEST_ID_HEADER`` (when
    ``REQUEST_ID_TRUST_INCOMING`` and ``TRUSTED_PROXY_COUNT`` says a proxy stands in front: without
    one the header comes from the client, who must not pick the ID its log lines carry), else a new
    one. It is in every log line written while the request is served and in the response's header of
    the same name."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.header = settings.REQUEST_ID_HEADER
        self.meta_key = "HTTP_" + self.header.upper().replace("-", "_")

    def __call__(self, request):
        trusted = settings.REQUEST_ID_TRUST_INCOMING and settings.TRUSTED_PROXY_COUNT > 0
        incoming = request.META.get(self.meta_key) if trusted else None
        request.request_id = request_id.choose(incoming)
        request_id.current.set(request.request_id)  # cleared on request_finished (core.apps)
        response = self.get_response(request)
        response[self.header] = request.request_id
        return response


class AdminOnlyMixin:
    """Middleware built for the admin (sessions, auth, messages) does nothing for the API: its
    views authenticate with JWT. Skipping it there saves its per-request work; every other path
    (the admin above all) gets it unchanged. Subclasses of Django's own classes, so the admin's
    system checks still find them. (CSRF stays Django's own class: ``check --deploy`` looks for
    it by name, and DRF's views are exempt from it anyway.)"""

    def __call__(self, request):
        if request.path_info.startswith("/api/"):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(AdminOnlyMixin, sessions.SessionMiddleware):
    pass


class AuthenticationMiddleware(AdminOnlyMixin, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(AdminOnlyMixin, messages.MessageMiddleware):
    pass


class CorsMiddleware(cors.CorsMiddleware):
    """django-cors-headers' middleware, free while CORS is off (the default: no origins listed). Off,
    the original still parses every API request's headers and adds ``Vary: Origin`` to every
    response for a header it will never send. Settings are read per request, as the original does
(base settings spell out all three, so none is missing)."""

    def __call__(self, request):
        if (settings.CORS_ALLOWED_ORIGINS or settings.CORS_ALLOWED_ORIGIN_REGEXES
                or settings.CORS_ALLOW_ALL_ORIGINS or cors_signals.check_request_enabled.has_listeners()):
            return super().__call__(request)
        return self.get_response(request)
