"""Cache invalidation for chat; connected in ChatConfig.ready()."""

from .services import invalidate_message

__all__ = ["invalidate_message"]
