"""The write paths on the embedded SQLite default, as `make run` serves them: run by
tests/test_sqlite_writes.py in a subprocess (pytest-django holds one engine per session).

    python tests/sqlite_writes.py /tmp/some.sqlite3   # REDIS_URL: a Redis of your own

Migrates a fresh database, loads the demo data, then drives the API with Django's test client:
register and log in, a plan paid for through the offline checkout, a generation, a chat post,
a plan change, concurrent generations and chat posts from threads. Prints what it saw as JSON
(one object); the test asserts on it."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path


def main(db_path: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DATABASE_URL"] = f"sqlite:///{db_path}"
    os.environ.setdefault("SECRET_KEY", "sqlite-writes-test-" + "x" * 40)
    os.environ.setdefault("PAYMENT_OFFLINE_WEBHOOK_SECRET", "whsec_sqlite_writes_test_" + "y" * 32)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ["DEBUG"] = "false"
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true"  # jobs run in this process as they are queued
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.test import APIClient

    from accounts.models import CoinLedgerEntry, User
    from subscriptions.models import DailyUsage

    seen: dict = {"vendor": connection.vendor}
    call_command("migrate", verbosity=0)
    call_command("load_demo_data", verbosity=0)

    api = APIClient()
    register = api.post("/api/auth/register", {"email": "new@example.com", "password": "sqlite-Pass-4321"},
                        format="json")
    seen["register"] = register.status_code
    login = api.post("/api/auth/token", {"email": "new@example.com", "password": "sqlite-Pass-4321"},
                     format="json")
    seen["login"] = login.status_code
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {login.json()['access']}")
    user = User.objects.get(email="new@example.com")
    seen["coins_at_start"] = api.get("/api/me/coins").json()["balance"]

    checkout = api.post("/api/subscription", {"plan": "pro"}, format="json")
    seen["checkout"] = checkout.status_code
    paid = APIClient().post(checkout.json()["checkout"]["checkout_url"], {"outcome": "paid"}, format="json")
    seen["paid"] = paid.status_code
    seen["plan_after_payment"] = api.get("/api/subscription").json()["plan"]["code"]
    seen["coins_after_payment"] = api.get("/api/me/coins").json()["balance"]

    generation = api.post("/api/generations", {"prompt": "a lighthouse"}, format="json",
                          HTTP_IDEMPOTENCY_KEY="sqlite-1")
    rendered = api.get(f"/api/generations/{generation.json()['id']}").json()  # its job ran on commit
    seen["generation"] = (generation.status_code, rendered.get("status"), generation.json().get("cost"))
    again = api.post("/api/generations", {"prompt": "a lighthouse"}, format="json", HTTP_IDEMPOTENCY_KEY="sqlite-1")
    seen["generation_retry"] = (again.status_code, again.json().get("id") == generation.json().get("id"))
    seen["coins_after_generation"] = api.get("/api/me/coins").json()["balance"]
    ledger = CoinLedgerEntry.objects.filter(user=user).first()
    seen["ledger_head"] = (ledger.reason, ledger.amount, ledger.balance_after, ledger.reference)

    url = "/api/chat/luna/sessions/first/messages"
    posts = [api.post(url, {"content": text}, format="json") for text in ("hello", "again")]
    seen["chat"] = [(p.status_code, p.json()["message"]["seq"], p.json()["reply_seq"]) for p in posts]
    history = api.get(url).json()["messages"]  # the replies' jobs ran as each message committed
    # The persona's greeting opens a reply only when the responder was given no earlier messages.
    seen["greeted"] = ["Good evening, traveller" in m["content"] for m in history if m["role"] == "assistant"]
    seen["chat_history"] = [(m["seq"], m["role"]) for m in history]
    stats = api.get("/api/subscription/stats").json()
    seen["stats"] = {"generations": stats["generations"]["used_today"], "messages": stats["messages"]["used_today"],
                     "coins_spent": stats["coins_spent"]}

    downgrade = api.post("/api/subscription", {"plan": "free"}, format="json")
    seen["downgrade"] = (downgrade.status_code, downgrade.json().get("next_plan"))

    # Threads, each with its own connection: SQLite serialises the writers; none may fail.
    token = login.json()["access"]

    def concurrently(count: int, request) -> list[int]:
        statuses: list[int] = [0] * count

        def run(i: int) -> None:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            try:
                statuses[i] = request(client, i).status_code
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return statuses

    before = User.objects.get(pk=user.pk).coin_balance
    statuses = concurrently(8, lambda client, i: client.post("/api/generations", {"prompt": f"p{i}"}, format="json"))
    seen["concurrent_generations"] = sorted(statuses)
    created = statuses.count(202)
    after = User.objects.get(pk=user.pk).coin_balance
    cost = seen["generation"][2]
    seen["concurrent_coins_add_up"] = before - after == created * cost
    seen["ledger_adds_up"] = sum(CoinLedgerEntry.objects.filter(user=user).values_list("amount", flat=True)) == after
    seen["usage_adds_up"] = DailyUsage.objects.get(user=user).generations == 1 + created
    statuses = concurrently(8, lambda client, i: client.post("/api/chat/luna/sessions/busy/messages",
                                                             {"content": f"m{i}"}, format="json"))
    seen["concurrent_chat"] = sorted(statuses)
    seen["busy_history"] = [m["seq"] for m in api.get("/api/chat/luna/sessions/busy/messages").json()["messages"]]
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
