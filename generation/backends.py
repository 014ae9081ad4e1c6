"""Image backends. ``settings.GENERATION_BACKEND`` names the one in use (a dotted path):

- ``generation.backends.PlaceholderBackend`` (default): offline, a deterministic placeholder.
- ``generation.backends.OpenAIImageBackend``: any server speaking OpenAI's images API (OpenAI,
  vLLM, LocalAI ...), configured by OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_IMAGE_MODEL.

A backend runs in a worker (generation/jobs.py), never in a web request. Its optional classmethod
``sizes()`` is read in the web request too (generation_create, the schema): which sizes it can
render, None (or no such method) for any size; it must not need a client or a key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

__all__ = ["ImageBackend", "OpenAIImageBackend", "PlaceholderBackend", "renderable"]

# The sizes OpenAI's own models render, as the installed SDK documents them (openai 3.63,
# types/image_generate_params.py, ``size``): the standard sizes for the GPT image models, any
# WIDTHxHEIGHT within limits for gpt-image-2 and gpt-image-2.5-*. Listed: the gpt-image-1 family,
# which takes only the standard ones. Not listed, so any size (a refusal there costs a refund, a wrong
# restriction a size that works): gpt-image-2 and 2.5-*, the newer names whose sizes the SDK leaves open
# (gpt-image-2.6-*, chatgpt-image-latest), the retired dall-e-2 and dall-e-3, and every model
# OpenAI does not serve (vLLM, LocalAI ...).
OPENAI_IMAGE_SIZES: dict[str, frozenset[str]] = dict.fromkeys(
    ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"), frozenset({"1024x1024", "1536x1024", "1024x1536"}))


def renderable(sizes: Iterable[str]) -> list[str]:
    """Those of ``sizes`` the configured backend (GENERATION_BACKEND) can render, in their order.
    Creates no backend: the web process may have no provider key."""
    backend_sizes = getattr(import_string(settings.GENERATION_BACKEND), "sizes", None)
    accepted = backend_sizes() if backend_sizes is not None else None
    return [size for size in sizes if accepted is None or size in accepted]


class ImageBackend(Protocol):
    # Optional: ``@classmethod def sizes(cls) -> frozenset[str] | None`` (see the module's docstring).

    def generate(self, *, prompt: str, parameters: dict) -> dict:
        """Return the result (at least ``url``); raise to fail the generation (it is retried, then
        refunded; a ProviderError with retryable=False is refunded at once)."""


class PlaceholderBackend:
    """Works offline and completes at once: a deterministic placeholder for the same input."""

    @classmethod
    def sizes(cls) -> frozenset[str] | None:
        return None  # any

    def generate(self, *, prompt: str, parameters: dict) -> dict:
        digest = hashlib.sha256(repr((prompt, sorted(parameters.items()))).encode()).hexdigest()[:16]
        width, height = parameters["size"].split("x")
        return {
            "url": f"https://placeholder.invalid/{digest}.png",
            "width": int(width),
            "height": int(height),
            "seed": parameters.get("seed"),
            "model": parameters.get("model"),
        }


class OpenAIImageBackend:
    """OpenAI's images API (``POST /v1/images/generations``) through the official SDK. The model is
    OPENAI_IMAGE_MODEL (the settings row's default_model names the placeholder's)."""

    def __init__(self) -> None:
        # Imported here: a web process that imports this module need not load the SDK (0.3 s, 22 MB).
        from core.jobs.providers import openai_client

        self.client = openai_client(timeout=settings.OPENAI_IMAGE_TIMEOUT)

    @classmethod
    def sizes(cls) -> frozenset[str] | None:
        """What OPENAI_IMAGE_MODEL renders, if it is one of OpenAI's models; None (any) otherwise."""
        return OPENAI_IMAGE_SIZES.get(settings.OPENAI_IMAGE_MODEL)

    def generate(self, *, prompt: str, parameters: dict) -> dict:
        from core.jobs.providers import ProviderError, openai_call

        model = settings.OPENAI_IMAGE_MODEL
        response = openai_call("image", lambda: self.client.images.generate(
            model=model, prompt=prompt, size=parameters["size"], n=1))
        if not response.data:
            raise ProviderError("The image provider returned no image.", retryable=True)
        image = response.data[0]
        width, height = parameters["size"].split("x")
        result = {"width": int(width), "height": int(height), "seed": parameters.get("seed"), "model": model}
        if image.url:
            result["url"] = image.url
        elif image.b64_json:
            # No URL (gpt-image models answer base64): the data URL keeps the image with the row.
            result["url"] = f"data:image/png;base64,{image.b64_json}"
        else:
            raise ProviderError("The image provider returned neither a URL nor image data.", retryable=False)
        if getattr(image, "revised_prompt", None):
            result["revised_prompt"] = image.revised_prompt
        return result
