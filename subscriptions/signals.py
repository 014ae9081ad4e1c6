"""Cache invalidation for subscriptions and plans; connected in SubscriptionsConfig.ready()."""

from .services import invalidate_subscriptions


def invalidate_subscription(*, instance, **kwargs) -> None:
    invalidate_subscriptions(user_ids=[instance.user_id])


def invalidate_plan_subscribers(*, instance, **kwargs) -> None:
    # Cached subscriptions embed their plan: a plan edit reaches every subscriber's keys.
    invalidate_subscriptions(user_ids=instance.subscriptions.values_list("user_id", flat=True).iterator())
