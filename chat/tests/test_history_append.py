"""A chat post appends its messages to the cached history inside Redis (append_to_page.lua): the page
never crosses the wire, and what Redis holds afterwards is byte for byte what the loader builds from
the database, or nothing."""

from __future__ import annotations

import orjson
import pytest
from django.db import transaction

from chat.cache import CHAT_HISTORY, history_append, history_target, invalidate_chat_history
from chat.models import ChatMessage, ChatSession
from core.cache.api import Payload, amend_after_commit
from tests.support.harness import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/chat/luna/sessions/s1/messages"


def history_key(user) -> str:
    return f"chat:history:{user.id}:luna:s1"


def loaded(user, redis_raw, session: str = "s1") -> bytes:
    """What a load from the database stores for the session (under the name's current version)."""
    return Payload.of(CHAT_HISTORY.load(user_id=user.id, character="luna", session=session),
                      stamp=redis_raw.get("chat:version:luna")).pack()


def redis_bytes(redis_raw) -> int:
    stats = redis_raw.info("stats")
    return stats["total_net_input_bytes"] + stats["total_net_output_bytes"]


@pytest.mark.parametrize("cap", [3, 4, 100])  # dropping the oldest, exactly full, room left
def test_posts_leave_the_page_the_loader_builds(alice, user, characters, redis_raw, settings, cap):
    settings.CHAT_HISTORY_CACHED_MESSAGES = cap
    assert alice.post(URL, {"content": "first \"quoted\" ✨ ],\"has_more\":"}, format="json").status_code == 202
    for text in ("second", "third {\"seq\":1}", "fourth"):
        alice.get(URL)
        before = Payload.unpack(redis_raw.get(history_key(user)))
        assert alice.post(URL, {"content": text}, format="json").status_code == 202
        assert redis_raw.get(history_key(user)) == loaded(user, redis_raw)  # amended, not deleted: the ETag too
        assert Payload.unpack(redis_raw.get(history_key(user))).etag != before.etag
        assert not redis_raw.exists(f"lease:{history_key(user)}")


def post_bytes(alice, user, characters, redis_raw, *, session: str, page_messages: int, message: str) -> int:
    """Redis bytes in and out for one post to a session whose cached page holds ``page_messages``
    messages of 2,500 characters."""
    url = f"/api/chat/luna/sessions/{session}/messages"
    chat = ChatSession.objects.create(user=user, character=characters["luna"], session_id=session,
                                      last_seq=page_messages)
    ChatMessage.objects.bulk_create(ChatMessage(session=chat, user=user, seq=seq, role="user", content="x" * 2500)
                                    for seq in range(1, page_messages + 1))
    alice.get("/api/subscription/stats")
    alice.get(url)
    key = f"chat:history:{user.id}:luna:{session}"
    assert len(redis_raw.get(key)) > 2500 * page_messages
    before = redis_bytes(redis_raw)
    assert alice.post(url, {"content": message}, format="json").status_code == 202
    moved = redis_bytes(redis_raw) - before
    assert redis_raw.get(key) == loaded(user, redis_raw, session)
    return moved


def test_a_post_moves_the_message_not_the_page(alice, user, characters, redis_raw, no_worker):
    """The post's own traffic; its reply's job (not run here) reads the page once for its context."""
    message = "word " * 100
    post_bytes(alice, user, characters, redis_raw, session="first", page_messages=1, message=message)  # NOSCRIPT once
    small = post_bytes(alice, user, characters, redis_raw, session="small", page_messages=1, message=message)
    large = post_bytes(alice, user, characters, redis_raw, session="large", page_messages=10, message=message)
    # A 25 KB page costs what a 2.5 KB one does (give or take a digit of the new seq); the whole
    # request (its user, character, plan and stats reads too, both appends) is the message, the
    # reply (a hundred bytes) and a constant.
    assert abs(large - small) < 64, (small, large)
    # Here the broker is the same redis-server: the reply's job message (ids in Celery's envelope,
    # about 1.5 KB) counts too.
    assert large < len(message) + 4096 + 2048, large


def test_an_item_not_above_the_newest_deletes_the_page(alice, user, characters, redis_raw):
    assert alice.post(URL, {"content": "hello"}, format="json").status_code == 202
    alice.get(URL)
    older = ChatMessage.objects.get(user=user, seq=1)
    with amend_after_commit(history_target(user_id=user.id, character="luna", session="s1")) as (history,):
        with transaction.atomic():
            invalidate_chat_history(user_id=user.id, character="luna", session="s1")
        history_append(history, older)  # already on the page: the script will not guess
    assert not redis_raw.exists(history_key(user))
    assert not redis_raw.exists(f"lease:{history_key(user)}")


def test_a_reply_that_lands_after_a_newer_message_goes_in_its_place(alice, user, characters, redis_raw, no_worker):
    from chat.jobs import chat_reply

    assert alice.post(URL, {"content": "first"}, format="json").status_code == 202
    assert alice.post(URL, {"content": "second, before the first reply"}, format="json").status_code == 202
    alice.get(URL)  # cached: messages 1 and 3, both replies still queued
    first_reply, second_reply = no_worker("chat")
    chat_reply(**first_reply, last_try=True)  # seq 2, below the page's newest
    assert redis_raw.get(history_key(user)) == loaded(user, redis_raw)  # amended in place, not deleted
    assert [m["seq"] for m in orjson.loads(alice.get(URL).content)["messages"]] == [1, 2, 3]
    chat_reply(**second_reply, last_try=True)
    assert redis_raw.get(history_key(user)) == loaded(user, redis_raw)


@pytest.mark.parametrize("cap", [2, 3])  # the late reply falls off a full page, or lands in it
def test_a_late_reply_keeps_a_full_page_as_the_loader_builds_it(alice, user, characters, redis_raw, settings,
                                                                 no_worker, cap):
    from chat.jobs import chat_reply

    settings.CHAT_HISTORY_CACHED_MESSAGES = cap
    for text in ("one", "two", "three"):
        assert alice.post(URL, {"content": text}, format="json").status_code == 202
    alice.get(URL)  # seqs 1, 3, 5 in the database; the page holds the newest ``cap``
    replies = no_worker("chat")
    chat_reply(**replies[0], last_try=True)  # seq 2
    assert redis_raw.get(history_key(user)) == loaded(user, redis_raw)
    chat_reply(**replies[2], last_try=True)  # seq 6, the newest
    assert redis_raw.get(history_key(user)) == loaded(user, redis_raw)


def test_a_value_of_another_shape_is_deleted_not_amended(alice, user, characters, redis_raw, no_worker):
    assert alice.post(URL, {"content": "hello"}, format="json").status_code == 202
    alice.get(URL)
    redis_raw.set(history_key(user), Payload.of({"session": "s1", "items": []}).pack())
    assert alice.post(URL, {"content": "again"}, format="json").status_code == 202
    assert not redis_raw.exists(history_key(user))
    assert orjson.loads(alice.get(URL).content)["messages"][-1]["seq"] == 3  # the replies are still queued


def test_an_invalidation_in_between_deletes_rather_than_appends(alice, user, characters, redis_raw):
    assert alice.post(URL, {"content": "hello"}, format="json").status_code == 202
    alice.get(URL)
    mine = ChatMessage(user=user, role="user", content="late")
    with amend_after_commit(history_target(user_id=user.id, character="luna", session="s1")) as (history,):
        redis_raw.delete(f"lease:{history_key(user)}")  # another commit's invalidation ran
        alice.get(URL)  # and a reader cached the page again
        with transaction.atomic():
            chat = ChatSession.objects.get(user=user)
            mine.session, mine.seq = chat, 3
            mine.save()
        history_append(history, mine)
    assert not redis_raw.exists(history_key(user))
    assert orjson.loads(alice.get(URL).content)["messages"][-1]["content"] == "late"


def test_concurrent_posts_leave_the_loaders_page_or_none(client_for, user, characters, redis_raw, settings):
    settings.CHAT_HISTORY_CACHED_MESSAGES = 5
    client_for(user).post(URL, {"content": "start"}, format="json")
    for round_ in range(4):
        client_for(user).get(URL)

        def post(i: int, round_=round_) -> int:
            return client_for(user).post(URL, {"content": f"r{round_} #{i}"}, format="json").status_code

        assert run_concurrently(4, post) == [202] * 4
        raw = redis_raw.get(history_key(user))
        assert raw is None or raw == loaded(user, redis_raw)
        assert not redis_raw.exists(f"lease:{history_key(user)}")
    page = orjson.loads(client_for(user).get(URL).content)
    assert [m["seq"] for m in page["messages"]] == list(range(30, 35))
