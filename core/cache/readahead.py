"""An endpoint names the families its GET reads once, as ``cache_reads`` on the view; the same
family objects are what its selectors fetch. Authentication reads those keys together with the
user's own key in one MGET (``read_ahead``), and the selectors find them on the request.

The parts of each key are taken by name from the authenticated user's id and the URL's kwargs
(``FAMILY.read_as(part="url_kwarg")`` where the names differ),
so an endpoint cannot name one key and read another; ``check_cache_reads`` (a system check)
refuses a view whose families need a part its URL does not have.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.urls import URLPattern, URLResolver, get_resolver

from .family import KeyFamily, Parts


def planned_reads(view: Any, request: Any, *, user_id: int, url_kwargs: dict) -> list[tuple[KeyFamily, Parts]]:
    """The (family, parts) pairs the view's GET will read, from its ``cache_reads``. A query
    parameter named in ``cache_reads_skipped_by`` sends the page to the database (older chat
    pages), so nothing is read ahead then. ``request`` is DRF's or, on the cached-read lane
    (core.http.lane), Django's own: both have ``GET``."""
    reads = getattr(view, "cache_reads", ())
    skipped_by = getattr(view, "cache_reads_skipped_by", ())
    # Without a query string there is nothing to look up (and no QueryDict to build).
    if not reads or (skipped_by and request.META.get("QUERY_STRING") and any(name in request.GET for name in skipped_by)):
        return []
    values = {"user_id": user_id, **url_kwargs}
    return [(family, family.parts_from(values, sources)) for family, sources in map(_spec, reads)]


def _spec(read: KeyFamily | tuple[KeyFamily, dict[str, str]]) -> tuple[KeyFamily, dict[str, str]]:
    return (read, {}) if isinstance(read, KeyFamily) else read


def readahead_of(request: Any) -> dict[str, bytes | None] | None:
    """Keys authentication already read for this request."""
    return getattr(request, "cache_readahead", None)


def url_patterns(resolver: URLResolver, prefix_kwargs: frozenset[str] = frozenset()):
    """Every URL pattern under ``resolver`` with the kwargs its URL captures."""
    for entry in resolver.url_patterns:
        kwargs = prefix_kwargs | frozenset(entry.pattern.converters)
        if isinstance(entry, URLResolver):
            yield from url_patterns(entry, kwargs)
        elif isinstance(entry, URLPattern):
            yield entry, kwargs


@checks.register(checks.Tags.caches)
def check_cache_reads(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for pattern, url_kwargs in url_patterns(get_resolver()):
        view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        if view is None:  # a plain function view declares no cache reads
            continue
        for family, sources in map(_spec, getattr(view, "cache_reads", ())):
            missing = {sources.get(name, name) for name in family.fields} - {"user_id"} - url_kwargs
            if missing:
                errors.append(checks.Error(
                    f"{view.__name__}.cache_reads names {family.name}, which needs {sorted(missing)} "
                    f"that the URL {pattern.pattern} does not capture", id="core.E001"))
    return errors
