"""Queueing a generation's job (by the task's name: generation/tasks.py imports the services)."""

from __future__ import annotations

from core.jobs import enqueue


def generation_enqueue(*, generation_id: int) -> None:
    """Send the generation to a worker. Called once its charge has committed; if the message is
    lost (Redis down, the process killed in between), the sweep sends it again."""
    enqueue("generation.tasks.render", generation_id=generation_id)
