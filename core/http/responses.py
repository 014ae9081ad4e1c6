"""Responses built straight from cached JSON bytes: no serializer, no renderer on a hit."""

from django.http import HttpResponse, HttpResponseNotModified

from core.cache.api import Payload


def json_bytes_response(payload: Payload, request, *, shared: bool, status: int = 200) -> HttpResponse:
    """Per-user bodies are ``Cache-Control: private``; shared ones carry an ETag and answer
    ``If-None-Match`` with 304."""
    if shared:
        etag = f'"{payload.etag}"'
        if_none_match = request.META.get("HTTP_IF_NONE_MATCH", "")
        if etag in if_none_match or if_none_match.strip() == "*":  # "*": any current representation
            response = HttpResponseNotModified()
        else:
            response = HttpResponse(payload.body, content_type="application/json", status=status)
        response["ETag"] = etag
        response["Cache-Control"] = "no-cache"
        return response
    response = HttpResponse(payload.body, content_type="application/json", status=status)
    response["Cache-Control"] = "private, no-cache"
    return response
