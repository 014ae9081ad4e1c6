"""Chat responders. ``settings.CHAT_RESPONDER`` names the one in use (a dotted path):

- ``chat.responders.PersonaResponder`` (default): offline, deterministic.
- ``chat.responders.OpenAIResponder``: any server speaking OpenAI's chat completions API (OpenAI,
  vLLM, Ollama, LM Studio ...), configured by OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_CHAT_MODEL.

A responder runs in a worker (chat/jobs.py), never in a web request.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from django.conf import settings

from core.jobs.providers import ProviderError, openai_call, openai_client


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


class OpenAIResponder:
    """OpenAI's chat completions API through the official SDK: the character's persona as the
    system prompt, the recent history (the cached page) as context, OPENAI_CHAT_MAX_TOKENS at most."""

    def __init__(self) -> None:
        self.client = openai_client(timeout=settings.OPENAI_CHAT_TIMEOUT)

    def reply(self, *, character: dict, history: list[dict], message: str) -> str:
        system = f"You are {character['display_name']}, a character in a chat. Stay in character."
        if character.get("persona_prompt"):
            system += "\n" + character["persona_prompt"]
        messages = [{"role": "system", "content": system}]
        context = history[-settings.OPENAI_CHAT_CONTEXT_MESSAGES:] if settings.OPENAI_CHAT_CONTEXT_MESSAGES else []
        messages += [{"role": m["role"], "content": m["content"]} for m in context]
        messages.append({"role": "user", "content": message})
        completion = openai_call("chat", lambda: self.client.chat.completions.create(
            model=settings.OPENAI_CHAT_MODEL, messages=messages, max_tokens=settings.OPENAI_CHAT_MAX_TOKENS))
        content = completion.choices[0].message.content if completion.choices else None
        if not content or not content.strip():
            raise ProviderError("The chat provider returned an empty reply.", retryable=True)
        return content.strip()
