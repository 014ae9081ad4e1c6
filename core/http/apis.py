import time

from django.conf import settings
from django.contrib.staticfiles import finders
from django.db import connection
from django.http import FileResponse, HttpResponse, JsonResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core import metrics
from core.cache.api import probe_cache
from core.jobs import queue_depths


def _probe(check) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # a health check reports failures, it does not raise them
        return {"status": "down", "error": type(exc).__name__, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _db_check() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


_COMPONENT = inline_serializer(
    "HealthComponent",
    {"status": serializers.ChoiceField(choices=["up", "degraded", "down"]), "latency_ms": serializers.FloatField(),
     "error": serializers.CharField(required=False),
     # Cluster mode: each primary's status, latency, breaker (and error when down).
     "nodes": serializers.DictField(child=serializers.DictField(), required=False)},
)


class HealthApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        auth=[],
        responses={
            200: inline_serializer("Health", {"status": serializers.CharField(), "database": _COMPONENT,
                                              "cache": _COMPONENT, "cache_breaker": serializers.CharField()}),
            503: inline_serializer("HealthDown", {"status": serializers.CharField(), "database": _COMPONENT,
                                                  "cache": _COMPONENT, "cache_breaker": serializers.CharField()}),
        },
    )
    def get(self, request):
        database = _probe(_db_check)
        ok = database["status"] == "up"
        cache, breaker = probe_cache(sync=ok)
        body = {
            "status": ("ok" if cache["status"] == "up" else "degraded") if ok else "down",
            "database": database,
            "cache": cache,
            "cache_breaker": breaker,
        }
        return Response(body, status=200 if ok else 503, headers={"Cache-Control": "no-store"})


class LivenessApi(APIView):
    """Is this process serving requests? Touches neither the database nor Redis: an orchestrator
    restarts what fails this, and a database outage is not cured by restarting every instance.
    Readiness (may this instance get traffic?) is /api/health/ready, the same as /api/health."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(auth=[], responses={200: inline_serializer("Liveness", {"status": serializers.CharField()})})
    def get(self, request):
        return Response({"status": "ok"}, headers={"Cache-Control": "no-store"})


def metrics_view(request):
    """Prometheus exposition: only from METRICS_ALLOWED_IPS, or with the METRICS_TOKEN bearer."""
    token = settings.METRICS_TOKEN
    # A request relayed by a reverse proxy on this host arrives from 127.0.0.1 too: the address
    # only counts when no proxy forwarded it.
    direct = "HTTP_X_FORWARDED_FOR" not in request.META and "HTTP_FORWARDED" not in request.META
    authorised = (direct and request.META.get("REMOTE_ADDR") in settings.METRICS_ALLOWED_IPS) or (
        token and request.headers.get("Authorization") == f"Bearer {token}"
    )
    if not authorised:
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return HttpResponse(generate_latest(metrics.registry(metrics.QueueDepthCollector(queue_depths))), content_type=CONTENT_TYPE_LATEST)


@cache_control(max_age=86400, public=True)
def favicon(request):
    """The admin's and Swagger UI's tab icon (browsers ask for /favicon.ico on their own)."""
    return FileResponse(open(finders.find("favicon.ico"), "rb"), content_type="image/x-icon")


def json_not_found(request, exception=None):
    return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)


@csrf_exempt  # a JSON 404 for any method: no CSRF 403 page in front of it (nothing is written)
def api_not_found(request, *args, **kwargs):
    """Every /api/ path no view claims (the last API route), also with DEBUG on."""
    return json_not_found(request)


def json_server_error(request):
    return JsonResponse({"detail": "Server error.", "code": "server_error"}, status=500)


def json_bad_request(request, exception=None):
    return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)
