import time

from core import metrics


class MetricsMiddleware:
    """Request latency into Prometheus, labelled by method and status class only (bounded)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        metrics.request_latency.labels(request.method, f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
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
