"""OpenAI-compatible model providers: the SDK client as settings configure it, and its errors
turned into one clear ProviderError (retryable or not) for the jobs that call it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import openai
from django.conf import settings

T = TypeVar("T")


class ProviderError(Exception):
    """A model provider failed. ``retryable``: worth another try later (timeouts, 429, 5xx,
    connection errors), not a refused request (400 bad input or content policy, 401/403 keys)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def openai_client(*, timeout: float) -> openai.OpenAI:
    """The SDK's client: OPENAI_BASE_URL (unset: api.openai.com) and OPENAI_API_KEY. The SDK's own
    retries are off: the job engine retries with its backoff, and a job's time stays bounded."""
    if not settings.OPENAI_API_KEY:
        raise ProviderError("OPENAI_API_KEY is not set (a local server that needs none takes any value).",
                            retryable=False)
    return _client(settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, timeout)


@functools.lru_cache(maxsize=8)
def _client(base_url: str | None, api_key: str, timeout: float) -> openai.OpenAI:
    # One per process and configuration, shared by the worker's threads (the SDK's client is
    # thread-safe): a new one per job costs its TLS context and connection pool every time.
    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)


def openai_call(what: str, call: Callable[[], T]) -> T:
    """Run one SDK call; its failures become ProviderError with a message fit for a log and the
    generation's result (never the key)."""
    try:
        return call()
    except openai.APITimeoutError as exc:
        raise ProviderError(f"The {what} provider did not answer in time.", retryable=True) from exc
    except openai.APIConnectionError as exc:
        raise ProviderError(f"The {what} provider could not be reached.", retryable=True) from exc
    except openai.RateLimitError as exc:
        raise ProviderError(f"The {what} provider is rate limiting us (429).", retryable=True) from exc
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        # The provider's words stay in the log (the chained exception): OpenAI's 401 quotes the key,
        # masked, and this message is what the user reads in a failed generation.
        raise ProviderError(f"The {what} provider refused the request ({exc.status_code}): the service's API key "
                            "was not accepted or lacks access.", retryable=False) from exc
    except openai.APIStatusError as exc:
        retryable = exc.status_code >= 500 or exc.status_code == 408
        raise ProviderError(f"The {what} provider refused the request ({exc.status_code}): {_detail(exc)}",
                            retryable=retryable) from exc
    except openai.OpenAIError as exc:
        raise ProviderError(f"The {what} provider failed: {exc}", retryable=True) from exc


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or exc.message)[:300]
