"""Generations on a real Celery worker (a separate process) and a real provider server: the
request answers at once, the worker renders; provider errors retry with backoff, then refund;
a worker killed with -9 mid-job leads to exactly one outcome, never a double charge or a free image."""

import time
import urllib.request
from datetime import timedelta

import pytest
from django.db.models import Sum

from accounts.models import CoinLedgerEntry, User
from generation.models import Generation
from subscriptions.models import DailyUsage
from tests.support.celery_worker import CeleryWorker
from tests.support.harness import free_port, until
from tests.support.openai_server import API_KEY, ProviderServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def provider():
    server = ProviderServer().start()
    yield server
    server.close()


@pytest.fixture
def start_worker(redis_server, provider, no_worker):
    started: list[CeleryWorker] = []

    def start(concurrency: int = 2, pool: str = "prefork", **env: str) -> CeleryWorker:
        worker = CeleryWorker(redis_url=redis_server.url, concurrency=concurrency, pool=pool, env={
            "GENERATION_BACKEND": "generation.backends.OpenAIImageBackend",
            "OPENAI_BASE_URL": provider.base_url, "OPENAI_API_KEY": API_KEY,
            "JOB_RETRY_DELAY": "0.5", "JOB_MAX_RETRIES": "2",
            "JOB_VISIBILITY_TIMEOUT": "3", "JOB_RESTORE_EVERY": "1", **env})
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.close()


def finished(client, generation_id: int) -> dict | None:
    body = client.get(f"/api/generations/{generation_id}").json()
    return body if body["status"] in ("completed", "failed") else None


def ledger(user) -> list[str]:
    return list(CoinLedgerEntry.objects.filter(user_id=user.id).order_by("id").values_list("reason", flat=True))


def test_the_request_answers_at_once_and_a_worker_renders(alice, user, provider, start_worker):
    provider.control(image_delay=1.0)
    start_worker()
    began = time.monotonic()
    response = alice.post("/api/generations", {"prompt": "a lighthouse"}, format="json")
    assert time.monotonic() - began < 0.9  # the provider's second is not the request's
    assert response.status_code == 202 and response.json()["status"] == "pending"
    gen_id = response.json()["id"]
    body = until(lambda: finished(alice, gen_id), what="the generation")
    assert body["status"] == "completed"
    assert body["result"]["url"].startswith("http://127.0.0.1:")
    assert [r["body"]["prompt"] for r in provider.received("/v1/images/generations")] == ["a lighthouse"]
    assert ledger(user) == ["plan_grant", "spend"] and User.objects.get(pk=user.id).coin_balance == 29


def test_provider_errors_retry_with_backoff_then_complete(alice, user, provider, start_worker):
    provider.control(fail_status=503, fail_count=2)
    start_worker()
    gen_id = alice.post("/api/generations", {"prompt": "a fox"}, format="json").json()["id"]
    assert until(lambda: finished(alice, gen_id), what="the generation")["status"] == "completed"
    calls = [r["at"] for r in provider.received("/v1/images/generations")]
    assert len(calls) == 3
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    # JOB_RETRY_DELAY 0.5 s doubled each try, jittered between half and all of it.
    assert gaps[0] >= 0.25 and gaps[1] >= 0.5, gaps
    assert ledger(user) == ["plan_grant", "spend"]


def test_a_provider_that_keeps_failing_is_refunded_after_the_last_try(alice, user, provider, start_worker):
    provider.control(fail_status=500, fail_count=1000)
    start_worker()
    gen_id = alice.post("/api/generations", {"prompt": "a fox"}, format="json").json()["id"]
    body = until(lambda: finished(alice, gen_id), what="the generation")
    assert body["status"] == "failed" and "500" in body["result"]["error"]
    assert len(provider.received("/v1/images/generations")) == 3  # the try and JOB_MAX_RETRIES=2 retries
    assert ledger(user) == ["plan_grant", "spend", "refund"]
    assert User.objects.get(pk=user.id).coin_balance == 30
    assert DailyUsage.objects.get(user=user).generations == 0


def test_a_refused_request_is_refunded_without_retrying(alice, user, provider, start_worker):
    provider.control(fail_status=400, fail_count=1000)
    start_worker()
    gen_id = alice.post("/api/generations", {"prompt": "forbidden"}, format="json").json()["id"]
    assert until(lambda: finished(alice, gen_id), what="the generation")["status"] == "failed"
    assert len(provider.received("/v1/images/generations")) == 1
    assert ledger(user) == ["plan_grant", "spend", "refund"]


def test_a_worker_killed_mid_job_leads_to_exactly_one_outcome(make_user, client_for, provider, start_worker):
    """Kill -9 the worker (and its pool) while every job waits on the provider; another worker
    takes the jobs over once the broker's visibility timeout returns them: each generation
    completes, charged once, never refunded."""
    users = [make_user(coins=10) for _ in range(4)]
    clients = [client_for(u) for u in users]
    provider.control(image_delay=2.0)
    first = start_worker(concurrency=4)
    ids = [c.post("/api/generations", {"prompt": f"p{i}"}, format="json").json()["id"] for i, c in enumerate(clients)]
    until(lambda: len(provider.received("/v1/images/generations")) >= 2, what="jobs on the provider")
    first.kill()
    assert Generation.objects.filter(pk__in=ids, status="running").exists()  # killed mid-job
    start_worker()
    for client, gen_id in zip(clients, ids, strict=True):
        assert until(lambda c=client, g=gen_id: finished(c, g), timeout=60, what="the generation")["status"] \
            == "completed"
    for u in users:
        assert ledger(u)[-1] == "spend"
        assert CoinLedgerEntry.objects.filter(user_id=u.id, reason="spend").count() == 1
        assert not CoinLedgerEntry.objects.filter(user_id=u.id, reason="refund").exists()
        assert User.objects.get(pk=u.id).coin_balance == 9
        assert CoinLedgerEntry.objects.filter(user_id=u.id).aggregate(s=Sum("amount"))["s"] == 9


def test_a_job_given_up_on_while_its_worker_was_dead_stays_refunded(alice, user, provider, start_worker):
    """The worker dies; the stale rule fails and refunds the generation; the job's message comes
    back to a new worker, which must not render it into a free image nor refund it again."""
    from generation.jobs import generations_sweep

    provider.control(image_delay=2.0)
    first = start_worker()
    gen_id = alice.post("/api/generations", {"prompt": "a fox"}, format="json").json()["id"]
    until(lambda: provider.received("/v1/images/generations"), what="the job on the provider")
    first.kill()
    Generation.objects.filter(pk=gen_id).update(created_at=Generation.objects.get(pk=gen_id).created_at
                                                - timedelta(hours=1))
    assert generations_sweep()["failed"] == 1
    worker = start_worker()
    until(lambda: "skipped" in worker.output(), timeout=30, what="the redelivered job")
    gen = Generation.objects.get(pk=gen_id)
    assert gen.status == "failed" and "url" not in gen.result
    assert ledger(user) == ["plan_grant", "spend", "refund"]
    assert User.objects.get(pk=user.id).coin_balance == 30
    assert len(provider.received("/v1/images/generations")) == 1  # never rendered again


def test_the_sweep_sends_again_a_job_whose_message_was_lost(alice, user, provider, start_worker, redis_raw,
                                                            settings):
    """The broker lost the message (evicted, flushed, Redis restarted without it): the pending row
    is the durable record, and the sweep queues it again."""
    from generation.jobs import generations_sweep

    gen_id = alice.post("/api/generations", {"prompt": "a fox"}, format="json").json()["id"]
    redis_raw.delete("celery:generations")  # the message is gone
    settings.GENERATION_REQUEUE_AFTER = 0
    time.sleep(0.05)
    assert generations_sweep() == {"failed": 0, "requeued": 1}
    settings.GENERATION_REQUEUE_AFTER = 60
    assert generations_sweep() == {"failed": 0, "requeued": 0}  # at most once per GENERATION_REQUEUE_AFTER
    start_worker()
    assert until(lambda: finished(alice, gen_id), what="the generation")["status"] == "completed"
    assert ledger(user) == ["plan_grant", "spend"]


def worker_backends() -> set[tuple[int, object]]:
    """This test database's PostgreSQL sessions other than the test's own: (pid, start)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, backend_start FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return set(cursor.fetchall())


def test_a_worker_keeps_its_database_connection_across_jobs_and_survives_losing_it(make_user, client_for, provider,
                                                                                    start_worker):
    from django.db import connection

    alice = client_for(make_user("many@example.com", plan="pro", coins=100))  # the free plan's daily limit is lower

    provider.control(image_delay=0.3)  # each job holds its connection long enough to be seen
    start_worker(concurrency=1, CONN_MAX_AGE="60")
    seen: set = set()
    for n in range(6):
        gen_id = alice.post("/api/generations", {"prompt": f"a lighthouse {n}"}, format="json").json()["id"]

        def done(gen_id: int = gen_id) -> dict | None:
            seen.update(worker_backends())
            return finished(alice, gen_id)

        assert until(done, what=f"generation {n}")["status"] == "completed"
    # Six jobs, one thread: one session (Celery's fixup alone opens a new one for every job).
    assert len(seen) <= 2, seen

    # A database restart or a pooler dropping the session: the next job finds out and reconnects.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    gen_id = alice.post("/api/generations", {"prompt": "after the cut"}, format="json").json()["id"]
    body = until(lambda: finished(alice, gen_id), what="the generation after the cut")
    assert body["status"] == "completed" and body["result"]["url"].startswith("http://127.0.0.1:")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


@pytest.mark.parametrize("pool, own_dir", [("threads", False), ("prefork", True)])
def test_a_worker_serves_its_job_metrics_on_its_own_port(alice, user, provider, start_worker, tmp_path, pool,
                                                         own_dir):
    """A worker on a host (or in a container) of its own: its failures and latencies are scraped
    from JOB_METRICS_PORT, with the queue depth read from the broker. Threads count in process;
    prefork's children write to PROMETHEUS_MULTIPROC_DIR (the Dockerfile sets one)."""
    port = free_port()
    provider.control(fail_status=400, fail_count=1)  # refused: failed at once
    start_worker(pool=pool, JOB_METRICS_PORT=str(port), JOB_METRICS_ADDR="127.0.0.1",
                 **({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")} if own_dir else {}))
    failed_id = alice.post("/api/generations", {"prompt": "refused"}, format="json").json()["id"]
    assert until(lambda: finished(alice, failed_id), what="the refused generation")["status"] == "failed"
    done_id = alice.post("/api/generations", {"prompt": "a fox"}, format="json").json()["id"]
    assert until(lambda: finished(alice, done_id), what="the generation")["status"] == "completed"
    # The counter follows the row's update by a moment.
    text = until(lambda: next((t for t in [scrape(port)] if 'outcome="completed"' in t), None),
                 what="the worker's metrics")
    assert 'jobs_total{job="generation",outcome="failed"} 1.0' in text
    assert 'jobs_total{job="generation",outcome="completed"} 1.0' in text
    assert 'job_latency_seconds_count{job="generation"} 2.0' in text
    assert 'jobs_queue_depth{queue="generations"} 0.0' in text
