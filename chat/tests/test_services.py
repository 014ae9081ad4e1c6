"""chat_message_send: the responder runs after the user's message commits, outside any
transaction and holding no lock; a failing responder still leaves an ordered, answered chat.
A chat post is at most 4 SQL statements in the bench mix (3 here, plus the connection's health
check there): the character, then the daily use, the session's counter, the message and the
responder's context in one statement, then the reply."""

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
    assert alice.post(url, {"content": f"user:{user.id}:one"}, format="json").status_code == 201
    assert alice.post(url, {"content": f"user:{user.id}:two"}, format="json").status_code == 201
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
    assert response.status_code == 201
    assert response.json()["reply"]["content"] == NO_REPLY
    history = alice.get(url).json()["messages"]
    assert [(m["seq"], m["role"], m["content"]) for m in history] == [(1, "user", "hello?"), (2, "assistant", NO_REPLY)]
    assert alice.get("/api/subscription/stats").json()["messages"]["used_today"] == 1


URL = "/api/chat/luna/sessions/s1/messages"


def test_a_chat_post_runs_three_statements(alice, user, characters, sql_statements):
    for url in ("/api/me", "/api/subscription"):
        assert alice.get(url).status_code == 200
    assert alice.post(URL, {"content": "first"}, format="json").status_code == 201
    with sql_statements() as run:
        response = alice.post(URL, {"content": "second"}, format="json")
    assert len(run) == 3, run
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["message"]["seq"], body["reply"]["seq"]) == (3, 4)
    assert list(ChatMessage.objects.order_by("seq").values_list("seq", "content"))[:3] == [
        (1, "first"), (2, ChatMessage.objects.get(seq=2).content), (3, "second")]
    assert DailyUsage.objects.get(user=user).messages == 2
