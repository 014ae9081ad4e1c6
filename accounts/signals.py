"""Cache invalidation for users and coins; connected in AccountsConfig.ready()."""

from core.cache import registry
from core.cache.store import invalidate


def invalidate_user(*, instance, **kwargs) -> None:
    emails = {instance.email, getattr(instance, "_loaded_email", None) or instance.email}
    invalidate(
        *((registry.USER_EMAIL, {"email": email}) for email in emails),
        (registry.USER_COINS, {"user_id": instance.pk}),
    )
    instance._loaded_email = instance.email


def invalidate_ledger(*, instance, **kwargs) -> None:
    invalidate(
        (registry.USER_COINS, {"user_id": instance.user_id}),
        (registry.SUBSCRIPTION_STATS, {"user_id": instance.user_id}),
    )


def remember_loaded_email(*, instance, **kwargs) -> None:
    # So a save that changes the email can invalidate the old address too.
    instance._loaded_email = instance.__dict__.get("email")
