from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions"

    def ready(self) -> None:
        from . import signals
        from .models import Plan, Subscription

        post_save.connect(signals.invalidate_subscription, sender=Subscription, dispatch_uid="subscription_saved")
        post_delete.connect(signals.invalidate_subscription, sender=Subscription, dispatch_uid="subscription_deleted")
        post_save.connect(signals.invalidate_plan_subscribers, sender=Plan, dispatch_uid="plan_saved")
