"""Chat through the API: exchanges, order, privacy, plan limits and paging of history."""

import pytest

from chat.models import ChatMessage, ChatSession

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/chat/{character}/sessions/{session}/messages"


def send(client, content, character="luna", session="s1"):
    return client.post(URL.format(character=character, session=session), {"content": content}, format="json")


def history(client, character="luna", session="s1", **query):
    return client.get(URL.format(character=character, session=session), query)


def exchange(client, content, character="luna", session="s1") -> dict:
    """Send, then read the reply from the history, as a client polls for it (the suite runs the
    reply's job in-process, so it is there at once)."""
    body = send(client, content, character, session).json()
    assert body["reply"] is None
    page = history(client, character, session).json()["messages"]
    body["reply"] = next(m for m in page if m["seq"] == body["reply_seq"])
    return body


def test_post_returns_the_message_and_the_reply_follows(alice, user, characters):
    response = send(alice, "Hello there, what do you see tonight?")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["session"] == "s1"
    assert body["message"]["seq"] == 1 and body["message"]["role"] == "user"
    assert body["message"]["content"] == "Hello there, what do you see tonight?"
    assert body["reply"] is None and body["reply_seq"] == 2
    body["reply"] = history(alice).json()["messages"][-1]
    assert body["reply"]["seq"] == 2 and body["reply"]["role"] == "assistant"
    reply = body["reply"]["content"]
    assert reply.startswith("Luna: Good evening.")  # in the character's voice, greeting first
    assert "You love stars" not in reply  # the persona is private
    assert ChatMessage.objects.filter(session__user=user).count() == 2


def test_reply_is_deterministic(alice, user, make_user, client_for, characters):
    first = exchange(alice, "same words", session="a")["reply"]["content"]
    second = exchange(alice, "same words", session="b")["reply"]["content"]
    other_user = exchange(client_for(make_user("bob@example.com")), "same words", session="a")
    assert first == second == other_user["reply"]["content"]
    # A different character answers in its own voice.
    assert exchange(alice, "same words", character="rex", session="a")["reply"]["content"].startswith("Rex:")


def test_content_is_trimmed_and_stored(alice, user, characters):
    body = send(alice, "  spaced out  ").json()
    assert body["message"]["content"] == "spaced out"


def test_history_is_in_strict_order(alice, user, characters):
    for i in range(5):
        assert send(alice, f"message {i}").status_code == 202
    body = history(alice).json()
    assert [m["seq"] for m in body["messages"]] == list(range(1, 11))
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 5
    assert [m["content"] for m in body["messages"][::2]] == [f"message {i}" for i in range(5)]
    assert body["has_more"] is False and body["next_before"] is None
    assert ChatSession.objects.get(user=user, session_id="s1").last_seq == 10


def test_history_reflects_new_messages_after_caching(alice, user, characters):
    send(alice, "one")
    assert len(history(alice).json()["messages"]) == 2  # now cached
    send(alice, "two")
    assert len(history(alice).json()["messages"]) == 4


def test_before_pages_through_older_messages(alice, user, characters):
    for i in range(6):
        send(alice, f"m{i}")  # seq 1..12
    page = history(alice, before=13, limit=5).json()
    assert [m["seq"] for m in page["messages"]] == [8, 9, 10, 11, 12]
    assert page["has_more"] is True and page["next_before"] == 8
    page = history(alice, before=page["next_before"], limit=5).json()
    assert [m["seq"] for m in page["messages"]] == [3, 4, 5, 6, 7]
    page = history(alice, before=page["next_before"], limit=5).json()
    assert [m["seq"] for m in page["messages"]] == [1, 2]
    assert page["has_more"] is False and page["next_before"] is None


@pytest.mark.parametrize("query", [{"before": 0}, {"before": "x"}, {"before": -3}, {"before": 2**40},
                                   {"before": 5, "limit": 0}, {"before": 5, "limit": 101}])
def test_bad_paging_parameters_are_400(alice, user, characters, query):
    send(alice, "hi")
    response = history(alice, **query)
    assert response.status_code == 400
    assert "detail" in response.json()


def test_unknown_session_is_404(alice, user, characters):
    assert history(alice, session="never").status_code == 404
    assert history(alice, session="never", before=5).status_code == 404


def test_other_users_session_is_404_and_lists_show_only_own(alice, user, make_user, client_for, characters):
    bob = client_for(make_user("bob@example.com"))
    send(bob, "bob's secret", session="bobs")
    send(alice, "alice's", session="mine")
    response = history(alice, session="bobs")
    assert response.status_code == 404
    assert "bob's secret" not in response.content.decode()
    assert history(alice, session="bobs", before=10).status_code == 404
    sessions = alice.get("/api/chat/luna/sessions").json()
    assert [s["session"] for s in sessions["results"]] == ["mine"]
    assert sessions["results"][0]["message_count"] == 2
    assert [s["session"] for s in bob.get("/api/chat/luna/sessions").json()["results"]] == ["bobs"]
    # Posting to the same client-chosen id makes alice her own session; bob's stays untouched.
    send(alice, "hello", session="bobs")
    assert [m["content"] for m in history(alice, session="bobs").json()["messages"]][0] == "hello"
    assert [m["content"] for m in history(bob, session="bobs").json()["messages"]][0] == "bob's secret"


def test_sessions_list_is_per_character(alice, user, characters):
    send(alice, "hi", character="luna", session="x")
    send(alice, "hi", character="rex", session="y")
    assert [s["session"] for s in alice.get("/api/chat/rex/sessions").json()["results"]] == ["y"]


def test_unknown_or_inactive_character_is_404(alice, user, characters):
    send(alice, "before it was hidden", character="rex", session="s1")
    characters["rex"].is_active = False
    characters["rex"].save()
    for name in ("nobody", "rex"):
        assert send(alice, "hi", character=name).status_code == 404
        assert alice.get(f"/api/chat/{name}/sessions").status_code == 404
        assert history(alice, character=name).status_code == 404
        assert history(alice, character=name, before=3).status_code == 404
    assert ChatMessage.objects.filter(session__character__name="rex").count() == 2


def test_premium_character_needs_premium_plan(alice, user, make_user, client_for, characters):
    response = send(alice, "hi", character="nyx")
    assert response.status_code == 403
    assert response.json()["code"] == "premium_required"
    assert not ChatSession.objects.exists()
    pro = client_for(make_user("pro@example.com", plan="pro"))
    assert send(pro, "hi", character="nyx").status_code == 202


def test_daily_message_limit_is_403(alice, user, characters, plans):
    plans["free"].daily_message_limit = 3
    plans["free"].save()  # the plan edit reaches cached subscriptions
    for i in range(3):
        assert send(alice, f"m{i}").status_code == 202
    response = send(alice, "one too many")
    assert response.status_code == 403
    assert response.json()["code"] == "daily_message_limit"
    assert ChatMessage.objects.filter(user=user, role="user").count() == 3


@pytest.mark.parametrize("payload", [{"content": ""}, {"content": "   "}, {}, {"content": "x" * 4001},
                                     {"content": ["a"]}, {"content": {"a": 1}}, {"content": None}])
def test_bad_content_is_400_and_writes_nothing(alice, user, characters, payload):
    response = alice.post(URL.format(character="luna", session="s1"), payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert "detail" in body
    assert not ChatSession.objects.exists() and not ChatMessage.objects.exists()


def test_longest_allowed_message_is_accepted(alice, user, characters):
    assert send(alice, "x" * 4000).status_code == 202


def test_bad_session_id_is_404(alice, user, characters):
    assert send(alice, "hi", session="x" * 65).status_code == 404
    assert send(alice, "hi", session="a.b").status_code == 404
    assert not ChatSession.objects.exists()


def test_chat_needs_auth(api, characters):
    assert send(api, "hi").status_code == 401
    assert history(api).status_code == 401
    assert api.get("/api/chat/luna/sessions").status_code == 401


@pytest.mark.slow
def test_fifty_concurrent_messages_stop_exactly_at_the_daily_limit_in_strict_order(make_user, client_for,
                                                                                     characters, plans):
    from subscriptions.models import DailyUsage
    from tests.support.harness import run_concurrently

    plans["free"].daily_message_limit = 20
    plans["free"].save()
    user = make_user("racer@example.com")
    clients = [client_for(user) for _ in range(50)]
    statuses = run_concurrently(50, lambda i: send(clients[i], f"message {i}").status_code)
    assert sorted(statuses) == [202] * 20 + [403] * 30, statuses
    assert DailyUsage.objects.get(user=user).messages == 20
    seqs = list(ChatMessage.objects.filter(session__user=user).order_by("seq").values_list("seq", "role"))
    assert seqs == [(n, "user" if n % 2 else "assistant") for n in range(1, 41)]
    assert ChatSession.objects.get(user=user).last_seq == 40
    stats = clients[0].get("/api/subscription/stats").json()
    assert stats["messages"] == {"used_today": 20, "daily_limit": 20, "remaining": 0}


@pytest.mark.slow
def test_concurrent_messages_keep_a_strict_order(make_user, client_for, characters):
    from tests.support.harness import run_concurrently

    user = make_user("chatty@example.com", plan="plus")
    statuses = run_concurrently(10, lambda i: send(client_for(user), f"message {i}").status_code)
    assert statuses == [202] * 10
    seqs = list(ChatMessage.objects.filter(session__user=user).order_by("seq").values_list("seq", "role"))
    assert seqs == [(n, "user" if n % 2 else "assistant") for n in range(1, 21)]
    assert ChatSession.objects.get(user=user).last_seq == 20


def test_the_recent_page_without_a_query_builds_no_query_serializer(alice, characters, monkeypatch):
    from chat.apis import ChatMessagesApi

    assert send(alice, "hi").status_code == 202
    monkeypatch.setattr(ChatMessagesApi, "QuerySerializer", None)  # building it would fail
    assert [m["seq"] for m in history(alice).json()["messages"]] == [1, 2]
