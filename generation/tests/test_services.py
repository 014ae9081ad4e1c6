"""generation_create: the image backend runs after the charge commits, outside any transaction
and without the user's row lock; usage is counted once, atomically; stale pendings are refunded."""

import threading
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction

from accounts.models import User
from core.testing import run_concurrently
from generation.models import Generation
from subscriptions.models import DailyUsage

pytestmark = pytest.mark.django_db(transaction=True)


def row_lock_is_free(user_id: int) -> bool:
    """From another connection: can the user's row be locked right now (NOWAIT)?"""
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with transaction.atomic():
                User.objects.select_for_update(nowait=True).only("id").get(pk=user_id)
            outcome.append(True)
        except DatabaseError:
            outcome.append(False)
        finally:
            connection.close()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return outcome == [True]


class ObservingBackend:
    seen: list = []

    def generate(self, *, prompt: str, parameters: dict) -> dict:
        user_id = int(prompt.split(":")[1])
        ObservingBackend.seen.append({
            "in_transaction": connection.in_atomic_block,
            "row_lock_free": row_lock_is_free(user_id),
            "charged": Generation.objects.filter(user_id=user_id, status="pending").exists(),
        })
        return {"url": "https://images.invalid/x.png"}


def test_the_backend_runs_after_the_charge_commits_and_holds_no_lock(alice, user, settings):
    settings.GENERATION_BACKEND = "generation.tests.test_services.ObservingBackend"
    ObservingBackend.seen = []
    response = alice.post("/api/generations", {"prompt": f"user:{user.id}"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "completed"
    assert ObservingBackend.seen == [{"in_transaction": False, "row_lock_free": True, "charged": True}]


def test_concurrent_generations_stop_exactly_at_the_daily_limit(make_user, client_for):
    user = make_user("busy@example.com", coins=100)  # free plan: 5 a day
    clients = [client_for(user) for _ in range(12)]
    results = run_concurrently(12, lambda i: clients[i].post("/api/generations", {"prompt": f"p{i}"},
                                                              format="json").status_code)
    assert sorted(results) == [201] * 5 + [403] * 7, results
    assert DailyUsage.objects.get(user=user).generations == 5
    assert Generation.objects.filter(user=user).count() == 5
    assert User.objects.get(pk=user.id).coin_balance == 95
    stats = clients[0].get("/api/subscription/stats").json()
    assert stats["generations"] == {"used_today": 5, "daily_limit": 5, "remaining": 0}


def test_a_pending_generation_left_by_a_dead_worker_is_failed_and_refunded(user, alice, settings):
    from generation.services import _generation_charge, generations_fail_stale

    gen = _generation_charge(user_id=user.id, character=None, prompt="p", parameters={}, cost=3, daily_limit=5,
                             idempotency_key=None, fingerprint="f")
    assert User.objects.get(pk=user.id).coin_balance == 27
    assert generations_fail_stale(older_than=timedelta(minutes=10)) == 0  # too young to be stale
    Generation.objects.filter(pk=gen.pk).update(created_at=gen.created_at - timedelta(minutes=11))
    assert generations_fail_stale(older_than=timedelta(minutes=10)) == 1
    gen.refresh_from_db()
    assert gen.status == "failed"
    assert User.objects.get(pk=user.id).coin_balance == 30
    assert DailyUsage.objects.get(user=user).generations == 0
    assert generations_fail_stale(older_than=timedelta(minutes=10)) == 0  # refunded once
    assert alice.get("/api/subscription/stats").json()["generations"]["used_today"] == 0
