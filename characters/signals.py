"""Cache invalidation for characters; connected in CharactersConfig.ready()."""

from .services import characters_invalidate


def remember_loaded_name(*, instance, **kwargs) -> None:
    instance._loaded_name = instance.__dict__.get("name")


def invalidate_character(*, instance, **kwargs) -> None:
    old_name = getattr(instance, "_loaded_name", None)
    characters_invalidate(names=[instance.name, old_name])
    if old_name and old_name != instance.name and instance.pk:
        # History keys carry the name: a rename must not leave the old name's histories behind,
        # to be served again if a new character takes that name.
        from chat.services import chat_histories_invalidate

        chat_histories_invalidate(character_id=instance.pk, name=old_name)
    instance._loaded_name = instance.name
