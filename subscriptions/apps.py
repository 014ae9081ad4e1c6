from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_save


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions"

    def ready(self) -> None:
        from . import cache, services

        cache.connect()
        post_save.connect(services.subscription_start_free_for_new_user, sender=settings.AUTH_USER_MODEL,
                          dispatch_uid="subscriptions.start_free_for_new_user")
