"""Bench-only Django pieces, wired in by config/settings/bench.py and never by the production URLconf.

* ``SqlCountMiddleware`` counts the SQL statements each request really runs (Django's
  ``connection.execute_wrapper``, so queries answered by django-cachalot are not counted, plus the
  ``SELECT 1`` of the connection health check, which bypasses that wrapper) into
  Prometheus counters labelled by route; gunicorn runs with PROMETHEUS_MULTIPROC_DIR, so
  ``/metrics`` sums every worker.
* ``FloorApi`` returns constant JSON bytes through the same middleware, JWT authentication and
  permission check as the real endpoints: the ceiling any cached endpoint can approach.
"""

import time

from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper
from django.http import HttpResponse
from django.urls import path
from prometheus_client import Counter
from rest_framework.views import APIView

from bench.bare import FLOOR_BODY
from config.urls import handler400, handler404, handler500  # noqa: F401
from config.urls import urlpatterns as production_urlpatterns

bench_requests = Counter("bench_requests_total", "Requests by route (bench settings only).", ["route"])
bench_sql = Counter("bench_sql_queries_total", "SQL statements by route (bench settings only).", ["route"])
bench_seconds = Counter("bench_server_seconds_total", "Time inside Django by route (bench settings only).", ["route"])


_health_checks = [0]
_is_usable = DatabaseWrapper.is_usable


def _counted_is_usable(self) -> bool:
    _health_checks[0] += 1  # CONN_HEALTH_CHECKS: one SELECT 1 per request that touches the database
    return _is_usable(self)


DatabaseWrapper.is_usable = _counted_is_usable


class SqlCountMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self._series: dict[tuple[str, str], tuple] = {}

    def __call__(self, request):
        count = 0
        checks_before = _health_checks[0]
        started = time.perf_counter()

        def counter(execute, sql, params, many, context):
            nonlocal count
            count += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(counter):
            response = self.get_response(request)
        count += _health_checks[0] - checks_before
        match = request.resolver_match
        route = (request.method, match.url_name if match else "unresolved")
        series = self._series.get(route)
        if series is None:  # the bound counters, once per route: no label lookups per request
            name = " ".join(route)
            series = self._series[route] = (bench_requests.labels(name), bench_seconds.labels(name), bench_sql.labels(name))
        series[0].inc()
        series[1].inc(time.perf_counter() - started)
        if count:
            series[2].inc(count)
        return response


class FloorApi(APIView):
    # Constant bytes behind what every cached read passes through: the JWT, the user's key read by
    # authentication, the middleware and the cached-read lane (core.http.lane), as a cached endpoint is.
    cache_reads = ()

    def get(self, request):
        response = HttpResponse(FLOOR_BODY, content_type="application/json")
        response["Cache-Control"] = "private, no-cache"
        return response


urlpatterns = [path("api/bench/floor", FloorApi.as_view(), name="bench-floor"), *production_urlpatterns]
