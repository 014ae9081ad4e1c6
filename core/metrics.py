"""Prometheus metrics. Under gunicorn set PROMETHEUS_MULTIPROC_DIR so every worker reports."""

from prometheus_client import Counter, Gauge, Histogram

cache_requests = Counter(
    "cache_requests_total", "Cached reads by key family and result (hit, miss, bypass, error).",
    ["family", "result"],
)
cache_invalidations = Counter(
    "cache_invalidations_total", "Invalidated keys by family and outcome (deleted, deferred).",
    ["family", "result"],
)
cache_errors = Counter("cache_errors_total", "Redis failures that the app ignored.", ["operation"])
breaker_open = Gauge("cache_breaker_open", "1 while this process skips Redis.", multiprocess_mode="max")
request_latency = Histogram(
    "http_request_duration_seconds", "Request latency by method and status class.",
    ["method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

_RESULTS = ("hit", "miss", "bypass", "error")


class FamilyCounters:
    """Pre-bound label children: a hit costs one increment, not a label lookup."""

    def __init__(self, family: str) -> None:
        for result in _RESULTS:
            setattr(self, result, cache_requests.labels(family=family, result=result))
        self.deleted = cache_invalidations.labels(family=family, result="deleted")
        self.deferred = cache_invalidations.labels(family=family, result="deferred")
