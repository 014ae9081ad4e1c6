"""chat_message_send: the responder runs in a job after the user's message commits, outside any
transaction and holding no lock; a failing responder still leaves an ordered, answered chat.
The message is one transaction (the daily use, the character's row for its persona, the
session's counter and the message), then the reply's job, whether or not the
user's subscription is cached. The character's existence and premium flag come from its shared
key (``character:{name}``); with ``subscription:user`` cold, the write reads the plan's row."""

import pytest
from django.db import connection

from chat.models import ChatMessage
from generation.tests.test_services import row_lock_is_free
from subscriptions.models import DailyUsage

pytestmark = pytest.mark.django_db(transaction=True)


class ObservingResponder:
    seen: list = []

    def reply(self, *, character: dict, history: list[dict], message: str) -> str:
        user_id = int(message.split(":")[1])
        ObservingResponder.seen.append({
            "in_transaction": connection.in_atomic_block,
            "row_lock_free": row_lock_is_free(user_id),
            "message_stored": ChatMessage.objects.filter(user_id=user_id, content=message).exists(),
            "history": [m["content"] for m in history],
        })
        return "ok"


class BrokenResponder:
    def reply(self, **kwargs) -> str:
        raise RuntimeError("model down")


def test_the_responder_runs_outside_the_transaction(user, alice, characters, settings):
    settings.CHAT_RESPONDER = "chat.tests.test_services.ObservingResponder"
    ObservingResponder.seen = []
    url = "/api/chat/luna/sessions/s1/messages"
    assert alice.post(url, {"content": f"user:{user.id}:one"}, format="json").status_code == 202
    assert alice.post(url, {"content": f"user:{user.id}:two"}, format="json").status_code == 202
    assert ObservingResponder.seen == [
        {"in_transaction": False, "row_lock_free": True, "message_stored": True, "history": []},
        {"in_transaction": False, "row_lock_free": True, "message_stored": True,
         "history": [f"user:{user.id}:one", "ok"]},
    ]


def test_a_failing_responder_keeps_the_message_and_the_order(alice, characters, settings):
    from chat.services import NO_REPLY

    settings.CHAT_RESPONDER = "chat.tests.test_services.BrokenResponder"
    url = "/api/chat/luna/sessions/s1/messages"
    response = alice.post(url, {"content": "hello?"}, format="json")
    assert response.status_code == 202
    history = alice.get(url).json()["messages"]
    assert [(m["seq"], m["role"], m["content"]) for m in history] == [(1, "user", "hello?"), (2, "assistant", NO_REPLY)]
    assert alice.get("/api/subscription/stats").json()["messages"]["used_today"] == 1


URL = "/api/chat/luna/sessions/s1/messages"


def reply_queued(queued) -> None:
    from chat.jobs import chat_reply

    for job in queued("chat"):
        assert chat_reply(**job, last_try=True) == "replied"


def test_a_chat_post_takes_the_next_two_seqs_and_counts_one_use(alice, user, characters, no_worker):
    for url in ("/api/me", "/api/subscription"):
        assert alice.get(url).status_code == 200
    assert alice.post(URL, {"content": "first"}, format="json").status_code == 202
    response = alice.post(URL, {"content": "second"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["message"]["seq"], body["reply_seq"]) == (3, 4)
    [job] = no_worker("chat")[1:]
    assert job["reply_seq"] == 4
    reply_queued(no_worker)
    assert list(ChatMessage.objects.order_by("seq").values_list("seq", "content"))[:3] == [
        (1, "first"), (2, ChatMessage.objects.get(seq=2).content), (3, "second")]
    assert DailyUsage.objects.get(user=user).messages == 2


def test_a_chat_post_with_the_subscription_cold_checks_the_plan_row(alice, user, characters, sql_statements,
                                                                     redis_raw):
    """Not loading ``subscription:user`` for a write: the message's write reads the plan's row."""
    for url in ("/api/me", "/api/characters/luna"):
        assert alice.get(url).status_code == 200
    assert not redis_raw.exists(f"subscription:user:{user.id}")
    with sql_statements() as run:
        response = alice.post(URL, {"content": "hello"}, format="json")
    assert any("subscriptions_subscription" in statement for statement in run), run
    assert not redis_raw.exists(f"subscription:user:{user.id}")  # a write does not fill it
    assert response.status_code == 202, response.content
    # The reply's job ran as the message committed (jobs run in-process in the suite).
    assert alice.get(URL).json()["messages"][-1]["content"].startswith("Luna: Good evening.")  # the persona was read
    assert DailyUsage.objects.get(user=user).messages == 1
    assert alice.get("/api/subscription/stats").json()["messages"]["used_today"] == 1


@pytest.mark.parametrize("case, code", [("expired", "no_active_subscription"), ("premium", "premium_required"),
                                        ("limit", "daily_message_limit")])
def test_a_refused_post_with_the_subscription_cold_writes_nothing(
        case, code, alice, user, characters, redis_raw):
    from datetime import timedelta

    from django.utils import timezone

    from chat.models import ChatSession
    from core.clock import day_start
    from subscriptions.models import Subscription

    character = "nyx" if case == "premium" else "luna"
    for url in ("/api/me", f"/api/characters/{character}"):
        assert alice.get(url).status_code == 200
    if case == "expired":  # the row says so; nothing cached says otherwise
        Subscription.objects.filter(user=user).update(current_period_end=timezone.now() - timedelta(seconds=1))
    if case == "limit":
        DailyUsage.objects.create(user=user, day=day_start().date(), generations=0, messages=50)
    assert not redis_raw.exists(f"subscription:user:{user.id}")
    response = alice.post(f"/api/chat/{character}/sessions/s1/messages", {"content": "hi"}, format="json")
    assert (response.status_code, response.json()["code"]) == (403, code)
    assert not ChatSession.objects.exists() and not ChatMessage.objects.exists()
    assert list(DailyUsage.objects.filter(user=user).values_list("messages", flat=True)) == (
        [50] if case == "limit" else [])


def test_a_character_deactivated_since_it_was_cached_is_404_and_writes_nothing(alice, user, characters):
    from characters.models import Character

    assert alice.get("/api/characters/luna").status_code == 200
    Character.objects.filter(name="luna").update(is_active=False)  # no signal: the key stays
    response = alice.post(URL, {"content": "hi"}, format="json")
    assert response.status_code == 404, response.content
    assert not ChatMessage.objects.exists() and not DailyUsage.objects.filter(user=user, messages__gt=0).exists()
