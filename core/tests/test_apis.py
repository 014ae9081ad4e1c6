"""/api/health and /metrics."""

import time

import pytest
from django.db import OperationalError
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db(transaction=True)


# --- health -------------------------------------------------------------------------------


def test_health_reports_both_up_with_latency(api):
    response = api.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "up" and body["cache"]["status"] == "up"
    assert 0 <= body["database"]["latency_ms"] < 1000
    assert 0 <= body["cache"]["latency_ms"] < 1000
    assert body["cache_breaker"] == "closed"
    assert response["Cache-Control"] == "no-store"


def test_health_with_redis_down_is_200_degraded(api, redis_server):
    redis_server.stop()
    try:
        response = api.get("/api/health")
    finally:
        redis_server.start()
    assert response.status_code == 200  # the API still serves from the database
    body = response.json()
    assert body["status"] == "degraded"
    assert body["cache"]["status"] == "down"
    assert body["cache"]["error"] == "ConnectionError"
    assert body["database"]["status"] == "up"
    assert body["cache_breaker"] == "open"


def test_health_with_redis_stalled_answers_fast(api, redis_server):
    redis_server.pause()
    try:
        started = time.monotonic()
        first = api.get("/api/health")
        second = api.get("/api/health")  # the breaker is open now: no second timeout
        elapsed = time.monotonic() - started
    finally:
        redis_server.resume()
    assert first.json()["cache"]["status"] == "down"
    assert second.json()["cache"]["status"] == "down"
    assert second.json()["cache"]["latency_ms"] < 50
    assert elapsed < 2


def test_health_with_the_database_down_is_503(api, monkeypatch):
    from django.db import connection

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    response = api.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["database"] == {**body["database"], "status": "down", "error": "OperationalError"}
    assert body["cache"]["status"] == "up"


def test_health_says_the_breaker_is_closed_as_soon_as_redis_answers_again(api):
    """A worker whose breaker opened during an outage and that served no cached read since must
    not go on reporting "open" once Redis is back."""
    from core.cache.health import HEALTH

    HEALTH.failure(ConnectionError("outage"), "get")
    HEALTH.open_until = 0.0  # the cooldown is over; Redis is up again
    body = api.get("/api/health").json()
    assert body["cache_breaker"] == "closed"
    assert body["status"] == "ok" and body["cache"]["status"] == "up"


def test_liveness_never_touches_the_database_or_redis(api, monkeypatch, redis_server):
    from django.db import connection

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    redis_server.stop()
    try:
        response = api.get("/api/health/live")
    finally:
        redis_server.start()
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    # Readiness is the full check: no database, no traffic.
    assert api.get("/api/health/ready").status_code == 503


def test_readiness_is_the_health_check(api):
    ready = api.get("/api/health/ready")
    assert ready.status_code == 200
    assert ready.json().keys() == api.get("/api/health").json().keys()


# --- metrics ------------------------------------------------------------------------------


def scrape(client, **extra) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def requests_total(samples, family, result) -> float:
    return samples.get(("cache_requests_total", (("family", family), ("result", result))), 0.0)


def test_metrics_show_per_family_hits_misses_invalidations_breaker_and_latency(alice, characters, client):
    from characters.models import Character

    before = scrape(client)
    alice.get("/api/characters/luna")  # miss
    alice.get("/api/characters/luna")  # hit
    alice.get("/api/characters/luna")  # hit
    Character.objects.get(name="luna").save()  # post_save invalidates character:luna and the list
    after = scrape(client)

    assert requests_total(after, "character", "miss") - requests_total(before, "character", "miss") == 1
    assert requests_total(after, "character", "hit") - requests_total(before, "character", "hit") == 2
    deleted = ("cache_invalidations_total", (("family", "character"), ("result", "deleted")))
    assert after[deleted] - before.get(deleted, 0) == 1
    assert after[("cache_breaker_open", (("node", ""),))] == 0
    latency = ("http_request_duration_seconds_count",
               (("method", "GET"), ("route", "/api/characters/<slug:name>"), ("status", "2xx")))
    assert after[latency] - before.get(latency, 0) >= 3
    assert any(name == "http_request_duration_seconds_bucket" for name, _ in after)


def test_metrics_show_the_breaker_open(client, redis_server, alice):
    redis_server.stop()
    try:
        alice.get("/api/me")
        samples = scrape(client)
    finally:
        redis_server.start()
    assert samples[("cache_breaker_open", (("node", ""),))] == 1
    assert any(name == "cache_errors_total" and value > 0 for (name, _), value in samples.items())


def test_metrics_are_not_found_from_other_addresses(client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}
    assert b"cache_requests_total" not in response.content


def test_metrics_relayed_by_a_local_reverse_proxy_are_not_found(client):
    # The proxy connects from 127.0.0.1, but the request came from the internet.
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert response.status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_FORWARDED="for=203.0.113.7").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


@override_settings(METRICS_TOKEN="scrape-token-123")
def test_metrics_token_lets_a_scraper_in_from_anywhere(client):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    samples = scrape(client, REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer scrape-token-123")
    assert ("cache_breaker_open", (("node", ""),)) in samples


@override_settings(METRICS_ALLOWED_IPS=[], METRICS_TOKEN="")
def test_metrics_closed_to_everyone_when_nothing_is_allowed(client):
    assert client.get("/metrics").status_code == 404


def test_metrics_sum_every_gunicorn_worker_in_multiprocess_mode(client, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from django.conf import settings

    script = "from core import metrics\nmetrics.FamilyCounters('user:email').hit.inc(5)\n"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two workers
        subprocess.run([sys.executable, "-c", script], env=env, cwd=settings.BASE_DIR, check=True)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert requests_total(scrape(client), "user:email", "hit") == 10


def test_latency_is_labelled_by_route_pattern_never_by_path(alice, characters, client):
    for name in ("luna", "rex", "nyx", "no-such-one"):
        alice.get(f"/api/characters/{name}")
    alice.get("/api/no/such/path")
    client.get("/nowhere-at-all")
    samples = scrape(client)
    routes = {dict(labels).get("route") for name, labels in samples if name == "http_request_duration_seconds_count"}
    assert "/api/characters/<slug:name>" in routes and "<unmatched>" in routes
    assert not any("luna" in route or "no/such" in route or "nowhere" in route for route in routes)
    per_status = {dict(labels)["status"]: value for (name, labels), value in samples.items()
                  if name == "http_request_duration_seconds_count" and dict(labels)["route"] == "/api/characters/<slug:name>"}
    assert per_status["2xx"] >= 3 and per_status["4xx"] >= 1
