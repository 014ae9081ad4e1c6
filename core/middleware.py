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
