"""Cache invalidation for generation; connected in GenerationConfig.ready()."""

from .services import invalidate_generation_settings, invalidate_generation_stats

__all__ = ["invalidate_generation_settings", "invalidate_generation_stats"]
