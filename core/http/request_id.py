"""The ID of the request being served, for every log line written while serving it.

RequestIdMiddleware sets it (a well-formed ID from the trusted header, or a new one) and returns it
in the response; request_finished clears it; RequestIdFilter, attached to the log handlers, copies it onto each record as
``request_id`` ("-" outside a request)."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

current: ContextVar[str] = ContextVar("request_id", default="-")

# What an ID taken from a request may look like: no spaces or control characters that could forge
# log lines, and short.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def choose(incoming: str | None) -> str:
    if incoming and _ACCEPTABLE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def clear(**kwargs) -> None:
    """On request_finished: Django logs a 4xx/5xx after the middleware returned, so the ID stays
    set until the response is done, then log lines are no longer the request's."""
    current.set("-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True
