"""The chat history's bulk loader (warm-up) gives every key exactly what its loader gives it."""

from datetime import UTC, datetime

import orjson
import pytest

from chat.cache import CHAT_HISTORY
from tests.support.harness import loaded_both_ways

pytestmark = pytest.mark.django_db(transaction=True)


def test_chat_history_bulk_is_the_loader(make_user, characters, settings):
    from chat.models import ChatMessage, ChatSession

    settings.CHAT_HISTORY_CACHED_MESSAGES = 3
    ann, ben = make_user("ann@example.com"), make_user("ben@example.com")

    def session(user, character, name, count):
        chat = ChatSession.objects.create(user=user, character=characters[character], session_id=name, last_seq=count)
        ChatMessage.objects.bulk_create(
            ChatMessage(session=chat, user=user, seq=seq, role="user" if seq % 2 else "assistant",
                        content=f"{name} #{seq} ✨") for seq in range(1, count + 1))

    session(ann, "luna", "long", 8)  # more than the limit: has_more, next_before
    session(ann, "luna", "exact", 3)  # exactly the limit: no more
    session(ann, "luna", "over", 4)  # one more than the limit
    session(ann, "rex", "long", 2)  # the same session id with another character
    session(ann, "nyx", "empty", 0)
    session(ben, "luna", "long", 5)  # the same session id of another user
    # Timestamps the database writes shorter: whole seconds, trailing zeros.
    ChatMessage.objects.filter(seq=8).update(created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    ChatMessage.objects.filter(seq=7).update(created_at=datetime(2026, 1, 2, 3, 4, 5, 400000, tzinfo=UTC))
    parts = [
        {"user_id": ann.id, "character": "luna", "session": "long"},
        {"user_id": ann.id, "character": "luna", "session": "exact"},
        {"user_id": ann.id, "character": "luna", "session": "missing"},
        {"user_id": ann.id, "character": "luna", "session": "over"},
        {"user_id": ann.id, "character": "rex", "session": "long"},
        {"user_id": ann.id, "character": "nyx", "session": "empty"},
        {"user_id": ben.id, "character": "luna", "session": "long"},
        {"user_id": ben.id, "character": "luna", "session": "exact"},  # ann's session, not ben's
        {"user_id": ann.id, "character": "nyx", "session": "long"},
    ]
    bulk, single = loaded_both_ways(CHAT_HISTORY, parts)
    assert bulk == single
    assert set(bulk) == {0, 1, 3, 4, 5, 6}
    pages = {at: orjson.loads(body) for at, body in bulk.items()}
    assert [m["seq"] for m in pages[0]["messages"]] == [6, 7, 8]
    assert (pages[0]["has_more"], pages[0]["next_before"]) == (True, 6)
    assert (pages[1]["has_more"], pages[1]["next_before"]) == (False, None)
    assert (pages[3]["has_more"], pages[3]["next_before"]) == (True, 2)
    assert pages[5] == {"session": "empty", "messages": [], "has_more": False, "next_before": None}
    assert pages[6]["messages"][-1]["content"] == "long #5 ✨"
    assert [m["created_at"] for m in pages[0]["messages"][1:]] == ["2026-01-02T03:04:05.400000Z", "2026-01-02T03:04:05Z"]
