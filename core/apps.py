from django.apps import AppConfig
from django.core.signals import request_finished


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from core.cache import readahead, topology  # noqa: F401  (register their system checks)
        from core.cache.ops.stats import REDIS_MEMORY

        from . import metrics
        from .http import request_id

        metrics.collect_at_scrape(REDIS_MEMORY)  # Redis memory and evictions in /metrics

        request_finished.connect(request_id.clear, dispatch_uid="core_request_id_clear")
