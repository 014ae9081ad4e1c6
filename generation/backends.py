"""Image backends. ``settings.GENERATION_BACKEND`` names the one in use."""

from __future__ import annotations

import hashlib
from typing import Protocol


class ImageBackend(Protocol):
    def generate(self, *, prompt: str, parameters: dict) -> dict:
        """Return the result (at least ``url``); raise to fail the generation (it is refunded)."""


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
