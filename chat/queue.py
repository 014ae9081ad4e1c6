"""Queueing a chat reply's job (by the task's name: chat/tasks.py imports the job's code)."""

from __future__ import annotations

from core.jobs import enqueue


def chat_reply_enqueue(*, user_id: int, character: str, session: str, session_pk: int, reply_seq: int) -> None:
    """Ask a worker for the reply to the message just committed (seq ``reply_seq - 1``). If the
    message is lost, the sweep sends it again: the user's message without a reply is the record."""
    enqueue("chat.tasks.reply", user_id=user_id, character=character, session=session, session_pk=session_pk,
            reply_seq=reply_seq)
