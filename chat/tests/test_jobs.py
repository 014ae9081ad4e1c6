"""Chat replies on a real Celery worker and a real OpenAI-compatible server: the message is
acknowledged at once, the reply is appended to the history when the model has answered, and a
reply whose job was lost is sent again by the sweep."""

import time

import pytest

from tests.support.celery_worker import CeleryWorker
from tests.support.harness import until
from tests.support.openai_server import API_KEY, ProviderServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

URL = "/api/chat/luna/sessions/s1/messages"


@pytest.fixture
def provider():
    server = ProviderServer(chat_delay=1.0).start()
    yield server
    server.close()


@pytest.fixture
def worker(redis_server, provider, no_worker):
    worker = CeleryWorker(redis_url=redis_server.url, env={
        "CHAT_RESPONDER": "chat.responders.OpenAIResponder", "OPENAI_BASE_URL": provider.base_url,
        "OPENAI_API_KEY": API_KEY, "JOB_RETRY_DELAY": "0.3"}).start()
    yield worker
    worker.close()


def reply_seen(client, seq: int) -> dict | None:
    return next((m for m in client.get(URL).json()["messages"] if m["seq"] == seq), None)


def test_the_message_is_acknowledged_at_once_and_the_reply_follows(alice, user, characters, provider, worker):
    assert alice.post(URL, {"content": "first"}, format="json").status_code == 202
    until(lambda: reply_seen(alice, 2))
    provider.control(fail_status=502, fail_count=1)  # one failure: retried
    began = time.monotonic()
    response = alice.post(URL, {"content": "what is a comet?"}, format="json")
    assert time.monotonic() - began < 0.9  # the model's second is not the request's
    assert response.status_code == 202 and response.json()["reply_seq"] == 4
    assert reply_seen(alice, 4) is None  # not yet
    reply = until(lambda: reply_seen(alice, 4))
    assert reply["role"] == "assistant" and reply["content"].endswith("You said: what is a comet?")
    # The persona as the system prompt, the cached history as context.
    body = provider.received("/v1/chat/completions")[-1]["body"]
    assert "You love stars." in body["messages"][0]["content"]
    assert [m["content"] for m in body["messages"][1:3]] == ["first", reply_seen(alice, 2)["content"]]
    assert len(provider.received("/v1/chat/completions")) == 3  # 1 + the failed try + its retry


def test_a_reply_whose_job_was_lost_is_sent_again(alice, user, characters, provider, redis_server, redis_raw,
                                                  settings, no_worker):
    from chat.jobs import chat_replies_sweep

    assert alice.post(URL, {"content": "hello?"}, format="json").status_code == 202
    redis_raw.delete("celery:chat")  # the broker lost it
    settings.CHAT_REPLY_REQUEUE_AFTER = 0
    time.sleep(0.05)
    assert chat_replies_sweep() == {"requeued": 1, "given_up": 0}
    worker = CeleryWorker(redis_url=redis_server.url, env={
        "CHAT_RESPONDER": "chat.responders.OpenAIResponder", "OPENAI_BASE_URL": provider.base_url,
        "OPENAI_API_KEY": API_KEY}).start()
    try:
        assert until(lambda: reply_seen(alice, 2))["content"].endswith("You said: hello?")
    finally:
        worker.close()
    settings.CHAT_REPLY_GIVE_UP_AFTER = 0
    assert chat_replies_sweep() == {"requeued": 0, "given_up": 0}  # answered: nothing to do

