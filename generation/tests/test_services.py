"""generation_create: the image backend runs after the charge commits (in a job), outside any transaction
and without the user's row lock; usage is counted once, atomically; stale pendings are refunded.
The charge is one transaction (the daily use, the pending row, the coins and their ledger row),
whether or not the user's subscription is cached; with ``subscription:user`` cold, the charge
reads the plan from the row. A refusal (plan, limit, coins) writes nothing."""

import threading
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import F

from accounts.models import CoinLedgerEntry, User
from core.clock import day_start
from generation.models import Generation
from subscriptions.models import DailyUsage
from tests.support.harness import run_concurrently

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
            "charged": Generation.objects.filter(user_id=user_id, status="running").exists(),
        })
        return {"url": "https://images.invalid/x.png"}


def test_the_backend_runs_after_the_charge_commits_and_holds_no_lock(alice, user, settings):
    settings.GENERATION_BACKEND = "generation.tests.test_services.ObservingBackend"
    ObservingBackend.seen = []
    response = alice.post("/api/generations", {"prompt": f"user:{user.id}"}, format="json")
    assert response.status_code == 202, response.content
    assert Generation.objects.get(pk=response.json()["id"]).status == "completed"
    assert ObservingBackend.seen == [{"in_transaction": False, "row_lock_free": True, "charged": True}]


@pytest.mark.slow
def test_fifty_concurrent_generations_stop_exactly_at_the_daily_limit(make_user, client_for):
    user = make_user("busy@example.com", coins=100)  # free plan: 5 a day
    clients = [client_for(user) for _ in range(50)]
    results = run_concurrently(50, lambda i: clients[i].post("/api/generations", {"prompt": f"p{i}"},
                                                              format="json").status_code)
    assert sorted(results) == [202] * 5 + [403] * 45, results
    assert DailyUsage.objects.get(user=user).generations == 5
    assert Generation.objects.filter(user=user).count() == 5
    assert User.objects.get(pk=user.id).coin_balance == 95
    stats = clients[0].get("/api/subscription/stats").json()
    assert stats["generations"] == {"used_today": 5, "daily_limit": 5, "remaining": 0}


def test_a_pending_generation_left_by_a_dead_worker_is_failed_and_refunded(user, alice, settings):
    from generation.services import _generation_charge, generations_fail_stale

    gen = _generation_charge(user_id=user.id, character=None, premium=False, prompt="p", parameters={}, cost=3,
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


def warm(client) -> None:
    for url in ("/api/me", "/api/subscription", "/api/generation/settings"):
        assert client.get(url).status_code == 200


def render_queued(queued) -> None:
    from generation.jobs import generation_render

    for job in queued():
        assert generation_render(generation_id=job["generation_id"], job_id="j", last_try=True) == "completed"


def test_a_generation_charges_its_use_and_coins_with_their_ledger_row(alice, user, no_worker):
    warm(alice)
    response = alice.post("/api/generations", {"prompt": "a lighthouse"}, format="json")
    assert response.status_code == 202, response.content
    gen = Generation.objects.get(user=user)
    assert gen.status == Generation.Status.PENDING and response.json()["id"] == gen.id
    assert no_worker() == [{"generation_id": gen.id}]  # queued once the charge committed
    render_queued(no_worker)
    gen.refresh_from_db()
    assert gen.status == Generation.Status.COMPLETED
    entry = CoinLedgerEntry.objects.filter(user=user).first()
    assert entry.reference == f"generation:{gen.id}" and entry.amount == -gen.cost
    assert entry.balance_after == User.objects.get(pk=user.id).coin_balance == 30 - gen.cost
    assert DailyUsage.objects.get(user=user).generations == 1


@pytest.mark.parametrize("character", [None, "luna"])
def test_a_generation_with_the_subscription_cold_checks_the_plan_row(character, alice, user, characters,
                                                                     sql_statements, redis_raw, no_worker):
    """Not loading ``subscription:user`` for a write: the charge reads the plan from the row."""
    for url in ("/api/me", "/api/generation/settings", "/api/characters/luna"):
        assert alice.get(url).status_code == 200
    assert not redis_raw.exists(f"subscription:user:{user.id}")
    request = {"prompt": "a lighthouse", **({"character": character} if character else {})}
    with sql_statements() as run:
        response = alice.post("/api/generations", request, format="json")
    assert any("subscriptions_subscription" in statement for statement in run), run
    assert not redis_raw.exists(f"subscription:user:{user.id}")  # a write does not fill it
    assert response.status_code == 202, response.content
    assert response.json()["character"] == character
    render_queued(no_worker)
    gen = Generation.objects.get(user=user)
    assert gen.status == Generation.Status.COMPLETED and gen.character_id == (
        characters[character].id if character else None)
    entry = CoinLedgerEntry.objects.filter(user=user).first()
    assert (entry.reference, entry.amount, entry.reason) == (f"generation:{gen.id}", -gen.cost, "spend")
    assert entry.balance_after == User.objects.get(pk=user.id).coin_balance == 30 - gen.cost
    stats = alice.get("/api/subscription/stats").json()
    assert stats["generations"]["used_today"] == 1 and stats["coins_spent"] == gen.cost
    assert alice.get("/api/me/coins").json() == {"balance": 30 - gen.cost}


@pytest.mark.parametrize("case, status, code", [
    ("expired", 403, "no_active_subscription"), ("premium", 403, "premium_required"),
    ("limit", 403, "daily_generation_limit"), ("coins", 402, "insufficient_coins")])
def test_a_refused_generation_with_the_subscription_cold_writes_nothing(
        case, status, code, alice, user, characters, redis_raw):
    from django.utils import timezone

    from subscriptions.models import Subscription

    for url in ("/api/me", "/api/generation/settings", "/api/characters/nyx"):
        assert alice.get(url).status_code == 200
    if case == "expired":  # the row says so; nothing cached says otherwise
        Subscription.objects.filter(user=user).update(current_period_end=timezone.now() - timedelta(seconds=1))
    if case == "limit":
        DailyUsage.objects.create(user=user, day=day_start().date(), generations=5, messages=0)
    if case == "coins":
        User.objects.filter(pk=user.id).update(coin_balance=0)
    assert not redis_raw.exists(f"subscription:user:{user.id}")
    request = {"prompt": "a cat", **({"character": "nyx"} if case == "premium" else {})}
    response = alice.post("/api/generations", request, format="json")
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert not Generation.objects.exists()
    assert list(DailyUsage.objects.filter(user=user).values_list("generations", flat=True)) == (
        [5] if case == "limit" else [])
    assert [e.reason for e in CoinLedgerEntry.objects.filter(user=user)] == ["plan_grant"]
    assert User.objects.get(pk=user.id).coin_balance == (0 if case == "coins" else 30)


def test_a_character_deactivated_since_it_was_cached_is_400_and_writes_nothing(alice, user, characters):
    from characters.models import Character

    assert alice.get("/api/characters/luna").status_code == 200
    Character.objects.filter(name="luna").update(is_active=False)  # no signal: the key stays
    response = alice.post("/api/generations", {"prompt": "x", "character": "luna"}, format="json")
    assert response.status_code == 400, response.content
    assert "character" in response.json()["errors"]
    assert not Generation.objects.exists() and User.objects.get(pk=user.id).coin_balance == 30
    assert not DailyUsage.objects.filter(user=user, generations__gt=0).exists()


def test_the_daily_limit_writes_nothing(alice, user):
    DailyUsage.objects.create(user=user, day=day_start().date(), generations=5, messages=0)
    warm(alice)
    response = alice.post("/api/generations", {"prompt": "one more"}, format="json")
    assert response.status_code == 403
    assert not Generation.objects.exists()
    assert DailyUsage.objects.get(user=user).generations == 5


def test_short_of_coins_takes_the_daily_use_back(make_user, client_for):
    from generation.services import generation_settings_update

    poor = make_user("poor@example.com", coins=2)
    generation_settings_update(cost_per_generation=3)
    response = client_for(poor).post("/api/generations", {"prompt": "a cat"}, format="json")
    assert response.status_code == 402
    assert not DailyUsage.objects.filter(user=poor, generations__gt=0).exists()
    assert not Generation.objects.exists()
    assert User.objects.get(pk=poor.id).coin_balance == 2


class OvertakenBackend:
    """The backend is so slow that generations_fail_stale fails and refunds the generation
    while it runs; then it returns an image after all."""

    def generate(self, *, prompt: str, parameters: dict) -> dict:
        from generation.services import generations_fail_stale

        Generation.objects.filter(status="running").update(created_at=F("created_at") - timedelta(minutes=11))
        assert generations_fail_stale(older_than=timedelta(minutes=10)) == 1
        return {"url": "https://images.invalid/late.png"}


def test_a_generation_refunded_as_stale_while_rendering_stays_failed(alice, user, settings):
    settings.GENERATION_BACKEND = "generation.tests.test_services.OvertakenBackend"
    response = alice.post("/api/generations", {"prompt": "slow"}, format="json")
    assert response.status_code == 202, response.content
    assert alice.get(f"/api/generations/{response.json()['id']}").json()["status"] == "failed"
    gen = Generation.objects.get(user=user)
    assert gen.status == "failed" and "url" not in gen.result  # no image given away after the refund
    assert User.objects.get(pk=user.id).coin_balance == 30
    assert [e.reason for e in CoinLedgerEntry.objects.filter(user=user).order_by("id")] == [
        "plan_grant", "spend", "refund"]
    assert DailyUsage.objects.get(user=user).generations == 0


class OvertakenFailingBackend:
    """The stale rule refunds the generation while the backend runs; then the backend fails too
    (its last try): the generation is refunded once, not twice."""

    def generate(self, *, prompt: str, parameters: dict) -> dict:
        from core.jobs.providers import ProviderError
        from generation.services import generations_fail_stale

        Generation.objects.filter(status="running").update(created_at=F("created_at") - timedelta(minutes=11))
        assert generations_fail_stale(older_than=timedelta(minutes=10)) == 1
        raise ProviderError("The image provider refused the request (400): no.", retryable=False)


def test_a_generation_refunded_as_stale_whose_job_then_fails_is_refunded_once(alice, user, settings):
    settings.GENERATION_BACKEND = "generation.tests.test_services.OvertakenFailingBackend"
    response = alice.post("/api/generations", {"prompt": "slow, then refused"}, format="json")
    assert response.status_code == 202, response.content
    gen = Generation.objects.get(user=user)
    assert gen.status == "failed" and gen.result == {"error": "The generation did not finish."}  # the first outcome
    assert [e.reason for e in CoinLedgerEntry.objects.filter(user=user).order_by("id")] == [
        "plan_grant", "spend", "refund"]
    assert User.objects.get(pk=user.id).coin_balance == 30
    assert DailyUsage.objects.get(user=user).generations == 0
    assert alice.get("/api/subscription/stats").json()["generations"]["used_today"] == 0


def enqueued(outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("jobs_enqueue_total", {"outcome": outcome}) or 0.0


@pytest.mark.slow
def test_a_frozen_broker_holds_one_request_not_every_one(make_user, client_for, no_worker, redis_server, settings):
    """The broker (here the test's Redis) frozen: the first request that queues a job waits out the
    connection's timeout and fails to queue it; the next ones within JOB_BROKER_COOLDOWN do not try.
    Every generation is accepted and pending (the sweep sends what was not queued)."""
    from core.jobs import BROKER

    settings.JOB_BROKER_COOLDOWN = 60
    alice = client_for(make_user("frozen@example.com", plan="pro", coins=100))
    BROKER.reset()
    before = {outcome: enqueued(outcome) for outcome in ("sent", "failed", "skipped")}
    redis_server.pause()
    try:
        statuses = [alice.post("/api/generations", {"prompt": f"frozen {n}"}, format="json").status_code
                    for n in range(3)]
    finally:
        redis_server.resume()
    try:
        assert statuses == [202, 202, 202]
        assert enqueued("failed") - before["failed"] == 1
        assert enqueued("skipped") - before["skipped"] == 2
        assert Generation.objects.filter(status=Generation.Status.PENDING).count() == 3
        # The failed publish may still land once Redis runs again (its reply timed out, not its
        # write): a job sent twice is harmless (a generation is taken once); the skipped never were.
        queued = len(no_worker())
        assert queued <= 1
        BROKER.reset()  # the cooldown is over
        assert alice.post("/api/generations", {"prompt": "thawed"}, format="json").status_code == 202
        assert enqueued("sent") - before["sent"] == 1 and len(no_worker()) == queued + 1
        # The rows are the record: the sweep sends every job the frozen broker did not take.
        from generation.jobs import generations_sweep

        settings.GENERATION_REQUEUE_AFTER = 0
        assert generations_sweep() == {"failed": 0, "requeued": 4}
        frozen = set(Generation.objects.filter(prompt__startswith="frozen").values_list("id", flat=True))
        assert len(frozen) == 3 and frozen <= {job["generation_id"] for job in no_worker()}
    finally:
        BROKER.reset()


def test_a_job_takes_its_generation_in_one_statement_once_free(alice, user, no_worker, settings,
                                                                django_assert_num_queries):
    from generation.jobs import generation_take

    gen_id = alice.post("/api/generations", {"prompt": "take me"}, format="json").json()["id"]
    with django_assert_num_queries(1):
        taken = generation_take(generation_id=gen_id, job_id="job-a")
    assert (taken.pk, taken.user_id, taken.prompt, taken.cost, taken.status) == (gen_id, user.id, "take me", 1,
                                                                                  "running")
    assert taken.parameters["size"] and taken.created_at is not None
    # Another job while job-a's lease runs: not free; job-a's own retry: free again.
    assert generation_take(generation_id=gen_id, job_id="job-b") is None
    assert generation_take(generation_id=gen_id, job_id="job-a") is not None
    # Past its lease (job-a's worker died), another job takes it over.
    Generation.objects.filter(pk=gen_id).update(
        started_at=F("started_at") - timedelta(seconds=settings.GENERATION_JOB_LEASE + 1))
    assert generation_take(generation_id=gen_id, job_id="job-b").status == "running"
    assert Generation.objects.get(pk=gen_id).job_id == "job-b"
    Generation.objects.filter(pk=gen_id).update(status="completed")
    assert generation_take(generation_id=gen_id, job_id="job-b") is None
