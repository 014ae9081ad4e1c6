from django.apps import AppConfig
from django.core.signals import request_finished


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from core.cache import readahead, topology  # noqa: F401  (register their system checks)

        from . import request_id

        request_finished.connect(request_id.clear, dispatch_uid="core_request_id_clear")
