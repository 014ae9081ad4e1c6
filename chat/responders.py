"""Chat responders. ``settings.CHAT_RESPONDER`` names the one in use."""

from __future__ import annotations

import hashlib
import re
from typing import Protocol


class Responder(Protocol):
    def reply(self, *, character: dict, history: list[dict], message: str) -> str:
        """The character's answer to ``message`` given the recent ``history``."""


class PersonaResponder:
    """Works offline: answers deterministically in the character's voice, from its persona and
    greeting. The same conversation always gets the same reply."""

    def reply(self, *, character: dict, history: list[dict], message: str) -> str:
        traits = [s.strip() for s in re.split(r"(?<=[.!?])\s+", character.get("persona_prompt") or "") if s.strip()]
        digest = int(hashlib.sha256(f"{character['name']}|{len(history)}|{message}".encode()).hexdigest(), 16)
        topic = " ".join(message.split()[:8])
        opener = character.get("greeting") or f"I am {character['display_name']}."
        if not history:
            parts = [opener]
        else:
            parts = []
        if traits:
            parts.append(traits[digest % len(traits)])
        parts.append(f'You said "{topic}"{"..." if len(message.split()) > 8 else ""}; tell me more.')
        return f"{character['display_name']}: " + " ".join(parts)
