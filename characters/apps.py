from django.apps import AppConfig
from django.db.models.signals import post_delete, post_init, post_save


class CharactersConfig(AppConfig):
    name = "characters"
    verbose_name = "Characters"

    def ready(self) -> None:
        from . import signals
        from .models import Character

        post_init.connect(signals.remember_loaded_name, sender=Character, dispatch_uid="character_loaded_name")
        post_save.connect(signals.invalidate_character, sender=Character, dispatch_uid="character_saved")
        post_delete.connect(signals.invalidate_character, sender=Character, dispatch_uid="character_deleted")
