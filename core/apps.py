from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from core.cache import readahead  # noqa: F401  (registers the cache_reads system check)
