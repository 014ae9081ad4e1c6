"""Content negotiation that does not parse what it need not parse."""

from rest_framework.negotiation import DefaultContentNegotiation


class SingleRendererNegotiation(DefaultContentNegotiation):
    """With one renderer, no format override and an Accept of ``*/*``, the renderer's own media
    type or none at all, DRF's answer is that renderer and its media type: give it without
    parsing the header (the API's usual request). Anything else is negotiated as DRF does
    (406 for an Accept it cannot serve, 404 for an unknown format)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if len(renderers) == 1 and format_suffix is None:
            renderer = renderers[0]
            accept = request.META.get("HTTP_ACCEPT", "*/*")  # absent: DRF reads it as */*
            if (accept == "*/*" or accept == renderer.media_type) and (
                not request.META.get("QUERY_STRING") or self.settings.URL_FORMAT_OVERRIDE not in request.query_params
            ):
                return renderer, renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)
