"""The OpenAPI schema's image sizes are the ones the settings accept right now and the image backend
renders, not every size the code knows: a client (or a schema fuzzer) that picks one from the enum
gets a generation, not a 400."""

from __future__ import annotations

import logging

from django.db import DatabaseError

from .backends import renderable
from .models import SIZES, GenerationSettings, default_sizes

logger = logging.getLogger(__name__)


def image_sizes_as_configured(result: dict, generator, request, public) -> dict:
    """A drf-spectacular postprocessing hook (after its enum hook, which makes ``ImageSize``)."""
    try:
        row = GenerationSettings.objects.filter(pk=1).first()  # a read: the schema creates no row
        allowed = [size for size in (row.allowed_sizes if row else default_sizes()) if size in SIZES]
    except DatabaseError:  # no database (`manage.py check --deploy` and `spectacular` build it offline)
        logger.debug("generation settings unreadable; the schema lists every size the backend renders", exc_info=True)
        allowed = list(SIZES)
    allowed = renderable(allowed)
    image_size = result.get("components", {}).get("schemas", {}).get("ImageSize")
    if image_size is not None and allowed:  # none: the enum stays whole (a schema enum is never empty)
        image_size["enum"] = allowed
    return result
