"""Suite-wide fixtures, a pytest plugin that the root conftest.py loads. Real PostgreSQL
(pytest-django's test database) and a real Redis that this test process starts for itself, so
tests can wipe it without touching a shared server."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.support.harness import RedisServer

_server: RedisServer | None = None


def pytest_configure(config):
    """Point the cache at a private redis-server before anything touches the cache."""
    global _server
    _server = RedisServer().start()
    settings.CACHES["default"]["LOCATION"] = _server.url
    settings.CELERY_BROKER_URL = _server.url  # jobs queued by a test go to its own Redis too


def pytest_unconfigure(config):
    if _server is not None:
        _server.close()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    assert _server is not None
    return _server


@pytest.fixture(autouse=True)
def _fresh_cache(redis_server):
    """Every test starts with an empty private Redis and a closed, unsynced breaker."""
    from core.cache.health import HEALTH
    from core.cache.watch import watcher

    redis_server.wipe()
    HEALTH.reset()
    yield
    watcher().stop()  # its database connection must not outlive the test database
    HEALTH.reset()


@pytest.fixture(scope="module")
def redis_cluster():
    """A real Redis Cluster (3 primaries, 3 replicas) on loopback, started once per test module."""
    from core.cache.cluster import ClusterConnectionFactory
    from tests.support.harness import RedisClusterProcesses

    cluster = RedisClusterProcesses().start()
    yield cluster
    ClusterConnectionFactory.close_all()
    cluster.close()


@pytest.fixture
def cluster_cache(redis_cluster, settings):
    """The cache layer and caches["default"] in cluster mode on ``redis_cluster``, emptied."""
    import copy

    from core.cache.cluster import reset_node_healths
    from core.cache.topology import cluster_options

    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["OPTIONS"] = cluster_options(
        caches["default"]["OPTIONS"], nodes=[f"127.0.0.1:{server.port}" for server in redis_cluster.alive()])
    settings.CACHES = caches
    redis_cluster.wipe()
    reset_node_healths()
    yield redis_cluster
    reset_node_healths()


@pytest.fixture
def revived(redis_cluster):
    """``redis_cluster`` with a previous test's victim rejoined first."""
    redis_cluster.revive()
    return redis_cluster


@pytest.fixture
def no_worker(settings):
    """Jobs are queued in the test's Redis and nobody runs them (the suite otherwise runs them
    in-process as they are queued); ``no_worker()`` lists the queued messages' kwargs."""
    from celery import current_app

    current_app.conf.task_always_eager = False
    settings.CELERY_TASK_ALWAYS_EAGER = False
    yield _queued_jobs
    current_app.conf.task_always_eager = True


def _queued_jobs(queue: str = "generations") -> list[dict]:
    import json
    from base64 import b64decode

    assert _server is not None
    client = _server.client()
    try:
        messages = [json.loads(raw) for raw in client.lrange(f"celery:{queue}", 0, -1)]
    finally:
        client.close()
    return [json.loads(b64decode(m["body"]))[1] for m in reversed(messages)]


@pytest.fixture
def redis_raw(redis_server):
    """A plain redis-py client on the test Redis: reads values the way redis-cli would."""
    client = redis_server.client()
    yield client
    client.close()


PASSWORD = "correct-horse-battery-9"


@pytest.fixture
def plans(transactional_db):
    """The plans of the data migration (a transactional test's flush removes them)."""
    import importlib

    from subscriptions.models import Plan

    defaults = importlib.import_module("subscriptions.migrations.0002_default_plans").PLANS
    return {p["code"]: Plan.objects.get_or_create(code=p["code"], defaults=p)[0] for p in defaults}


@pytest.fixture
def characters(transactional_db):
    from characters.models import Character

    rows = [
        Character(name="luna", display_name="Luna", greeting="Good evening.", persona_prompt="You love stars.",
                  description="An astronomer.", sort_order=1),
        Character(name="rex", display_name="Rex", greeting="Report!", persona_prompt="You are brisk.",
                  description="A captain.", sort_order=2),
        Character(name="nyx", display_name="Nyx", greeting="Shh.", persona_prompt="You whisper.",
                  description="A spirit.", is_premium=True, sort_order=3),
    ]
    for row in rows:
        row.save()
    return {row.name: row for row in rows}


@pytest.fixture
def make_user(transactional_db, plans):
    """make_user(email=..., coins=N, plan="free"): a registered user, subscribed (a paid plan paid
    for through the offline provider's checkout and webhook), with N coins."""
    from accounts.models import CoinLedgerEntry, User
    from accounts.services import coins_apply, user_register
    from tests.support.payments import plan_pay

    counter = iter(range(1, 10_000))

    def make(email: str | None = None, *, coins: int | None = None, plan: str = "free", **extra) -> User:
        user = user_register(email=email or f"user{next(counter)}@example.com", password=PASSWORD, **extra)
        if plan != "free":
            plan_pay(user_id=user.id, plan_code=plan)
        if coins is not None:
            balance = User.objects.get(pk=user.id).coin_balance
            if coins != balance:
                coins_apply(user_id=user.id, amount=coins - balance, reason=CoinLedgerEntry.Reason.ADJUSTMENT)
        user.refresh_from_db()
        return user

    return make


@pytest.fixture
def throttle_rates(monkeypatch):
    """throttle_rates(auth="5/min", ...): lower the API's rate limits for one test. DRF reads the
    rates once at import, so this patches the class attribute, not settings."""
    from rest_framework.throttling import SimpleRateThrottle

    def lower(**rates: str) -> None:
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, **rates})

    return lower


@pytest.fixture
def staff(plans):
    """Django's test client logged in as a superuser (``staff.admin``), for admin pages."""
    from django.test import Client

    from accounts.models import User

    admin = User.objects.create_superuser("root@example.com", "admin-password-123")
    client = Client()
    client.force_login(admin)
    client.admin = admin
    return client


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for():
    """client_for(user): an APIClient that sends the user's bearer token."""
    from accounts.apis import tokens_for

    def build(user) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_for(user)['access']}")
        return client

    return build


@pytest.fixture
def user(make_user):
    return make_user("alice@example.com", coins=30)


@pytest.fixture
def alice(client_for, user):
    return client_for(user)


@pytest.fixture
def sql_statements():
    """``with sql_statements() as run: ...`` then ``run`` lists the SQL statements sent, without
    BEGIN/COMMIT (what make bench counts: its execute_wrapper sees statements, not transaction
    control)."""
    from contextlib import contextmanager

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    @contextmanager
    def capture():
        run: list[str] = []
        with CaptureQueriesContext(connection) as context:
            yield run
        run.extend(q["sql"] for q in context.captured_queries if q["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK"))

    return capture
