"""Optional error tracking with Sentry: off unless SENTRY_DSN is set (config/settings/base.py).

Every event carries the request's ID (the X-Request-ID the client got and every log line of that
request shows) as the tag ``request_id``, so a report leads straight to its log lines."""

from __future__ import annotations

from core.http import request_id


def attach_request_id(event: dict, hint: dict) -> dict:
    current = request_id.current.get()
    if current != "-":
        event.setdefault("tags", {})["request_id"] = current
    return event


def start(*, dsn: str, environment: str, release: str, traces_sample_rate: float) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration()],
        environment=environment or None,
        release=release or None,
        traces_sample_rate=traces_sample_rate,
        send_default_pii=False,  # no emails, cookies or bodies leave the service
        before_send=attach_request_id,
    )
