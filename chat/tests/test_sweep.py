"""The chat reply sweep: a user message still without its reply is sent again, but at most once per
CHAT_REPLY_REQUEUE_AFTER, so a provider outage or a long queue is not multiplied by every sweep;
past CHAT_REPLY_GIVE_UP_AFTER it gets the placeholder answer, once."""

from datetime import timedelta

import pytest
from django.db.models import F

from chat.jobs import chat_replies_sweep, chat_reply
from chat.models import ChatMessage
from chat.services import NO_REPLY

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/chat/luna/sessions/s1/messages"


def age(minutes: int, *fields: str) -> None:
    """Move the user's message (``created_at``, or also its last re-send) back in time."""
    ChatMessage.objects.filter(role="user").update(**{
        name: F(name) - timedelta(minutes=minutes) for name in fields or ("created_at",)})


def test_a_waiting_reply_is_sent_again_at_most_once_per_period(alice, user, characters, no_worker, settings):
    settings.CHAT_REPLY_REQUEUE_AFTER = 120
    assert alice.post(URL, {"content": "hello?"}, format="json").status_code == 202
    assert len(no_worker("chat")) == 1
    assert chat_replies_sweep() == {"requeued": 0, "given_up": 0}  # not waiting long enough yet
    age(10)
    assert chat_replies_sweep() == {"requeued": 1, "given_up": 0}
    # The next sweeps (every JOBS_SWEEP_EVERY) leave it alone until the period is over.
    assert chat_replies_sweep() == {"requeued": 0, "given_up": 0}
    assert chat_replies_sweep() == {"requeued": 0, "given_up": 0}
    assert len(no_worker("chat")) == 2
    age(3, "created_at", "reply_sent_at")
    assert chat_replies_sweep() == {"requeued": 1, "given_up": 0}
    jobs = no_worker("chat")
    assert len(jobs) == 3 and all(job == jobs[0] for job in jobs)

    settings.CHAT_REPLY_GIVE_UP_AFTER = 60
    assert chat_replies_sweep() == {"requeued": 0, "given_up": 1}
    assert chat_replies_sweep() == {"requeued": 0, "given_up": 0}
    assert ChatMessage.objects.get(seq=2).content == NO_REPLY
    # The copies still queued find the reply written and write nothing.
    assert [chat_reply(**job, last_try=True) for job in jobs] == ["skipped"] * 3
    assert ChatMessage.objects.count() == 2
