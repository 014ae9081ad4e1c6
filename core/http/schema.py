"""OpenAPI: every operation documents the JSON errors it can answer with, so clients (and the
schema tests) can rely on the status codes and the error body, not only on the happy path."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from core.http.serializers import StrictInputMixin


class ErrorOutput(serializers.Serializer):
    """The body of every 4xx/5xx (core.http.exceptions)."""

    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.JSONField(required=False, help_text="Per-field messages of a validation error.")

    class Meta:
        ref_name = "Error"


def errors(*codes: int) -> dict:
    """``extend_schema(responses={..., **errors(402, 409)})``: extra error codes of one operation."""
    return {code: ErrorOutput for code in codes}


class AutoSchema(SpectacularAutoSchema):
    """Adds the error responses implied by the view: 401 when authenticated, 400/413/415 when it
    takes a body, 404 when it has path parameters, 400/404 when it has pages, 429 when throttled.
    A strict input (core.http.serializers) says ``additionalProperties: false``."""

    # One tag per area in Swagger UI: the first path segment, with plural collections under the
    # singular of the same area (`generations` beside `generation/settings`).
    TAG_ALIASES = {"generations": "generation"}

    def get_tags(self) -> list[str]:
        return [self.TAG_ALIASES.get(tag, tag) for tag in super().get_tags()]

    def _error_codes(self) -> set[int]:
        view = self.view
        codes: set[int] = set()
        if not any(p is AllowAny for p in getattr(view, "permission_classes", [])):
            codes.add(401)
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            codes.update((400, 413, 415))
        if "{" in self.path:
            codes.add(404)
        if self._is_list_view() and getattr(view, "pagination_class", None):  # ?page=x is a 400, ?page=999 a 404
            codes.update((400, 404))
        if getattr(view, "throttle_scope", None):
            codes.add(429)
        return codes

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictInputMixin):
            schema["additionalProperties"] = False  # unknown fields are a 400
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in sorted(self._error_codes()):
            responses.setdefault(str(code), self._get_response_for_code(ErrorOutput, str(code), direction=direction))
        return responses
