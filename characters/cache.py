"""The characters' cache families, ``characters:list`` and ``character:{name}``: their values,
their invalidation, and what warm-up fills. Registered in CharactersConfig.ready()."""

from __future__ import annotations

from collections.abc import Iterable

from core.cache.api import KeyFamily, Parts, WarmScope, connect_receivers, invalidate, invalidates, on, register

from .models import Character
from .signals import character_renamed

PUBLIC_FIELDS = ("name", "display_name", "description", "greeting", "avatar_url", "is_premium", "sort_order")


def character_public(character: Character) -> dict:
    return {field: getattr(character, field) for field in PUBLIC_FIELDS}


def character_list_payload() -> list[dict]:
    return [character_public(c) for c in Character.objects.filter(is_active=True).only(*PUBLIC_FIELDS)]


def character_payload(*, name: str) -> dict:
    """Raises Character.DoesNotExist for an unknown or inactive character (nothing is cached)."""
    return character_public(Character.objects.only(*PUBLIC_FIELDS).get(name=name, is_active=True))


def _active_names(scope: WarmScope) -> Iterable[Parts]:
    names = Character.objects.filter(is_active=True).order_by("sort_order", "id").values_list("name", flat=True)
    return ({"name": name} for name in names)


CHARACTERS_LIST = KeyFamily(
    name="characters:list", template="characters:list", ttl_setting="CACHE_TTL_CHARACTERS_LIST", default_ttl=1800,
    loader=character_list_payload, holds="the active characters", shared=True, near=True,
)
CHARACTER = KeyFamily(
    name="character", template="character:{name}", ttl_setting="CACHE_TTL_CHARACTER", default_ttl=1800,
    loader=character_payload, holds="one character", shared=True, enumerate=_active_names, near=True,
    tag="name",  # cluster: each character in its own slot, so they spread over the nodes
)


@invalidates(CHARACTERS_LIST, CHARACTER, when="bulk (de)activation, admin refresh")
def invalidate_characters(*, names: Iterable[str | None]) -> None:
    """The list and these names' keys (bulk (de)activation sends no per-row signal)."""
    invalidate((CHARACTERS_LIST, {}), *((CHARACTER, {"name": name}) for name in set(names) if name))


def remember_loaded_name(*, instance: Character, **kwargs: object) -> None:
    # So a rename can invalidate the old name's key too.
    vars(instance)["_loaded_name"] = vars(instance).get("name")


@invalidates(CHARACTERS_LIST, CHARACTER, triggers=[on("post_save", "characters.Character"),
                                                   on("post_delete", "characters.Character")])
def flush_character(*, instance: Character, **kwargs: object) -> None:
    """That character's save or delete: the list, and its old and new name."""
    old_name = vars(instance).get("_loaded_name")
    invalidate_characters(names=[instance.name, old_name])
    if old_name and old_name != instance.name and instance.pk:
        character_renamed.send(sender=Character, character_id=instance.pk, old_name=old_name,
                               new_name=instance.name)
    vars(instance)["_loaded_name"] = instance.name


def connect() -> None:
    from django.db.models.signals import post_init

    register(CHARACTERS_LIST, CHARACTER)
    connect_receivers(flush_character)
    post_init.connect(remember_loaded_name, sender=Character, dispatch_uid="characters.cache.remember_loaded_name")
