"""Image backends. ``settings.GENERATION_BACKEND`` names the one in use (a dotted path):

- ``generation.backends.PlaceholderBackend`` (default): offline, a deterministic placeholder.
- ``generation.backends.OpenAIImageBackend``: any server speaking OpenAI's images API (OpenAI,
  vLLM, LocalAI ...), configured by OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_IMAGE_MODEL.

A backend runs in a worker (generation/jobs.py), never in a web request.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from django.conf import settings

__all__ = ["ImageBackend", "OpenAIImageBackend", "PlaceholderBackend"]


class ImageBackend(Protocol):
    def generate(self, *, prompt: str, parameters: dict) -> dict:
        """Return the result (at least ``url``); raise to fail the generation (it is retried, then
        refunded; a ProviderError with retryable=False is refunded at once)."""


class PlaceholderBackend:
    """Works offline and completes at once: a deterministic placeholder for the same input."""

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
