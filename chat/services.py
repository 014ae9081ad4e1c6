"""Chat writes: the user's message and the character's reply, in order, within the plan's limits."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework import exceptions

from accounts.models import User
from characters.models import Character
from core.cache import registry
from core.cache.store import invalidate
from core.exceptions import PlanForbids
from subscriptions.selectors import day_start, subscription_require

from .models import ChatMessage, ChatSession
from .selectors import message_payload

_CONTEXT_MESSAGES = 20


def _responder():
    return import_string(settings.CHAT_RESPONDER)()


def chat_invalidate(*, user_id: int, character: str, session: str) -> None:
    invalidate(
        (registry.CHAT_HISTORY, {"user_id": user_id, "character": character, "session": session}),
        (registry.SUBSCRIPTION_STATS, {"user_id": user_id}),
    )


def chat_histories_invalidate(*, character_id: int, name: str) -> None:
    """Every session's history key of one character under the given name (used on rename)."""
    sessions = ChatSession.objects.filter(character_id=character_id).values_list("user_id", "session_id")
    invalidate(*(
        (registry.CHAT_HISTORY, {"user_id": user_id, "character": name, "session": session})
        for user_id, session in sessions
    ))


def chat_message_send(*, user_id: int, character: str, session: str, content: str) -> dict:
    """Store the message and the reply; returns both. Creates the session on first use."""
    char = (
        Character.objects.filter(name=character, is_active=True)
        .only("id", "name", "display_name", "greeting", "persona_prompt", "is_premium")
        .first()
    )
    if char is None:
        raise exceptions.NotFound("No such character.")
    if len(content) > settings.CHAT_MAX_MESSAGE_LENGTH:
        raise exceptions.ValidationError({"content": [f"At most {settings.CHAT_MAX_MESSAGE_LENGTH} characters."]})
    plan = subscription_require(user_id=user_id, premium=char.is_premium)

    with transaction.atomic():
        User.objects.select_for_update().only("id").get(pk=user_id)  # serialises limits and order
        sent_today = ChatMessage.objects.filter(
            user_id=user_id, role=ChatMessage.Role.USER, created_at__gte=day_start()
        ).count()
        if sent_today >= plan["daily_message_limit"]:
            raise PlanForbids("Daily message limit reached.", code="daily_message_limit")
        chat, _ = ChatSession.objects.get_or_create(user_id=user_id, character=char, session_id=session)
        history = [
            message_payload(m) for m in reversed(chat.messages.order_by("-seq")[:_CONTEXT_MESSAGES])
        ]
        persona = {
            "name": char.name, "display_name": char.display_name,
            "greeting": char.greeting, "persona_prompt": char.persona_prompt,
        }
        reply = _responder().reply(character=persona, history=history, message=content)
        now = timezone.now()
        mine = ChatMessage(session=chat, user_id=user_id, seq=chat.last_seq + 1,
                           role=ChatMessage.Role.USER, content=content, created_at=now)
        theirs = ChatMessage(session=chat, user_id=user_id, seq=chat.last_seq + 2,
                             role=ChatMessage.Role.ASSISTANT, content=reply, created_at=now)
        # bulk_create sends no signals: invalidate here (one round trip for both messages).
        ChatMessage.objects.bulk_create([mine, theirs])
        chat.last_seq += 2
        chat.save(update_fields=["last_seq", "updated_at"])
        chat_invalidate(user_id=user_id, character=character, session=session)
    return {"session": session, "message": message_payload(mine), "reply": message_payload(theirs)}


def invalidate_message(*, instance, **kwargs) -> None:
    session = ChatSession.objects.select_related("character").get(pk=instance.session_id)
    chat_invalidate(user_id=session.user_id, character=session.character.name, session=session.session_id)
