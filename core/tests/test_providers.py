"""The OpenAI-compatible providers through the official SDK, against a real local HTTP server
that speaks the API subset (tests/support/openai_server.py): requests as the API expects them, delays
past the timeout, refusals and server errors turned into clear, retryable-or-not errors."""

import pytest

from chat.responders import OpenAIResponder
from core.jobs.providers import ProviderError
from generation.backends import OpenAIImageBackend
from tests.support.openai_server import API_KEY, ProviderServer

LUNA = {"name": "luna", "display_name": "Luna", "greeting": "Good evening.", "persona_prompt": "You love stars."}


@pytest.fixture
def provider(settings):
    server = ProviderServer().start()
    settings.OPENAI_BASE_URL = server.base_url
    settings.OPENAI_API_KEY = API_KEY
    settings.OPENAI_CHAT_MODEL = "local-chat"
    settings.OPENAI_IMAGE_MODEL = "local-image"
    yield server
    server.close()


def test_chat_reply_sends_persona_history_and_token_limit(provider, settings):
    settings.OPENAI_CHAT_MAX_TOKENS = 64
    settings.OPENAI_CHAT_CONTEXT_MESSAGES = 2
    history = [{"seq": i, "role": "user" if i % 2 else "assistant", "content": f"m{i}"} for i in range(1, 6)]
    reply = OpenAIResponder().reply(character=LUNA, history=history, message="what is a comet?")
    assert reply.endswith("You said: what is a comet?")
    [call] = provider.received("/v1/chat/completions")
    body = call["body"]
    assert body["model"] == "local-chat" and body["max_tokens"] == 64
    assert body["messages"][0]["role"] == "system" and "You love stars." in body["messages"][0]["content"]
    assert "Luna" in body["messages"][0]["content"]
    # The last two messages of the history as context, then the new one.
    assert [(m["role"], m["content"]) for m in body["messages"][1:]] == [
        ("assistant", "m4"), ("user", "m5"), ("user", "what is a comet?")]


def test_image_generation_uses_the_images_api(provider):
    result = OpenAIImageBackend().generate(prompt="a red fox", parameters={"size": "512x512", "seed": 3})
    assert result["url"].startswith("http://127.0.0.1:") and result["url"].endswith(".png")
    assert (result["width"], result["height"], result["model"]) == (512, 512, "local-image")
    [call] = provider.received("/v1/images/generations")
    assert call["body"] == {"model": "local-image", "prompt": "a red fox", "size": "512x512", "n": 1}


def test_a_slow_provider_times_out_as_a_retryable_error(provider, settings):
    settings.OPENAI_IMAGE_TIMEOUT = 0.3
    provider.control(image_delay=2)
    with pytest.raises(ProviderError, match="did not answer in time") as caught:
        OpenAIImageBackend().generate(prompt="x", parameters={"size": "512x512"})
    assert caught.value.retryable


@pytest.mark.parametrize("status, retryable", [(500, True), (503, True), (429, True), (400, False), (403, False)])
def test_provider_errors_say_whether_to_retry(provider, status, retryable):
    provider.control(fail_status=status, fail_count=1)
    with pytest.raises(ProviderError) as caught:
        OpenAIResponder().reply(character=LUNA, history=[], message="hi")
    assert caught.value.retryable is retryable
    assert str(status) in str(caught.value) or status == 429 and "429" in str(caught.value)
    # The next call goes through: the SDK's own retries are off (the job engine retries).
    assert OpenAIResponder().reply(character=LUNA, history=[], message="hi").endswith("You said: hi")
    assert len(provider.received()) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_wrong_key_is_a_clear_error_that_is_not_retried_nor_shown(provider, settings, status):
    """The message becomes the generation's result.error, which its user reads: the provider's own
    words about a key (OpenAI's 401 quotes it, masked) stay in the worker's log."""
    if status == 401:
        settings.OPENAI_API_KEY = "sk-wrong-key-1234"
    else:
        provider.control(fail_status=403, fail_count=1)
    with pytest.raises(ProviderError, match=str(status)) as caught:
        OpenAIImageBackend().generate(prompt="x", parameters={"size": "512x512"})
    assert not caught.value.retryable
    assert "key was not accepted or lacks access" in str(caught.value)
    assert "sk-" not in str(caught.value) and "1234" not in str(caught.value)
    assert "injected" not in str(caught.value)


def test_no_key_or_no_server_are_clear_errors(settings):
    settings.OPENAI_API_KEY = ""
    with pytest.raises(ProviderError, match="OPENAI_API_KEY is not set"):
        OpenAIResponder()
    from tests.support.harness import free_port

    settings.OPENAI_API_KEY = API_KEY
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ProviderError, match="could not be reached") as caught:
        OpenAIResponder().reply(character=LUNA, history=[], message="hi")
    assert caught.value.retryable
