"""Chat responders. ``settings.CHAT_RESPONDER`` names the one in use."""

from __future__ import annotations

import hashlib
from typing import Protocol


class Responder(Protocol):
    def reply(self, *, character: dict, history: list[dict], message: str) -> str:
        """The character's answer to ``message`` given the recent ``history``."""


# The persona prompt is private (the API never shows it): it picks among these lines, and its own
# words never reach a reply.
_LINES = (
    "That is worth thinking about.",
    "I have wondered about that myself.",
    "Go on, I am listening.",
    "Now that is a question.",
    "Let us look at it together.",
    "I did not expect that.",
)


class PersonaResponder:
    """Works offline: answers deterministically in the character's voice, from its greeting and a
    line its persona chooses. The same conversation always gets the same reply."""

    def reply(self, *, character: dict, history: list[dict], message: str) -> str:
        persona = character.get("persona_prompt") or ""
        digest = int(hashlib.sha256(f"{character['name']}|{persona}|{len(history)}|{message}".encode()).hexdigest(), 16)
        topic = " ".join(message.split()[:8])
        parts = [] if history else [character.get("greeting") or f"I am {character['display_name']}."]
        parts.append(_LINES[digest % len(_LINES)])
        parts.append(f'You said "{topic}"{"..." if len(message.split()) > 8 else ""}; tell me more.')
        return f"{character['display_name']}: " + " ".join(parts)
