"""Cache invalidation for characters; connected in CharactersConfig.ready()."""

from .services import characters_invalidate


def remember_loaded_name(*, instance, **kwargs) -> None:
    instance._loaded_name = instance.__dict__.get("name")


def invalidate_character(*, instance, **kwargs) -> None:
    characters_invalidate(names=[instance.name, getattr(instance, "_loaded_name", None)])
    instance._loaded_name = instance.name
