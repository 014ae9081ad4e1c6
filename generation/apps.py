from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self) -> None:
        from . import signals
        from .models import Generation, GenerationSettings

        post_save.connect(signals.invalidate_generation_settings, sender=GenerationSettings, dispatch_uid="gen_settings_saved")
        post_delete.connect(signals.invalidate_generation_settings, sender=GenerationSettings, dispatch_uid="gen_settings_deleted")
        post_save.connect(signals.invalidate_generation_stats, sender=Generation, dispatch_uid="generation_saved")
        post_delete.connect(signals.invalidate_generation_stats, sender=Generation, dispatch_uid="generation_deleted")
