"""The accounts' cache families, ``user:email:{email}`` and ``user:coins:{user_id}``: their values,
their invalidation, and what warm-up fills. Registered in AccountsConfig.ready().

In Redis Cluster mode the email key carries the user's id as its hash tag
(``user:email:{123}:<email>``), so it shares a slot with the user's other keys; every caller
knows the id (authentication from the token, invalidation from the row)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Q

from core.cache.api import (
    Change,
    KeyFamily,
    Parts,
    WarmScope,
    connect_receivers,
    invalidate,
    invalidates,
    normalize_email,
    on,
    register,
    register_activity,
)
from core.http.formatting import iso_utc

from .models import CoinLedgerEntry, User

PROFILE_FIELDS = ("id", "email", "display_name", "is_active", "is_staff", "date_joined", "session_version")


def user_payload(user: User) -> dict:
    """The profile as the API shows it and as ``user:email:{email}`` holds it."""
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "date_joined": iso_utc(user.date_joined),
        "session_version": user.session_version,
    }


def user_payload_by_email(*, email: str, user_id: object = None) -> dict | None:
    # user_id only places the key (cluster hash tag); the caller checks the profile's id.
    user = User.objects.filter(email=normalize_email(email)).only(*PROFILE_FIELDS).first()
    return None if user is None else user_payload(user)


def user_payloads_by_email(parts_list: list[Parts]) -> dict[int, dict | None]:
    """user_payload_by_email for many keys (warm-up): one query. An unknown email is None, as there."""
    emails = [normalize_email(parts["email"]) for parts in parts_list]
    users = {user.email: user for user in User.objects.filter(email__in=set(emails)).only(*PROFILE_FIELDS)}
    return {at: None if email not in users else user_payload(users[email]) for at, email in enumerate(emails)}


def coins_payload(*, user_id: int) -> dict:
    balance = User.objects.filter(pk=user_id).values_list("coin_balance", flat=True).first()
    return {"balance": balance or 0}


def coins_payloads(parts_list: list[Parts]) -> dict[int, dict]:
    """coins_payload for many keys (warm-up): one query. An unknown user has 0, as there."""
    ids = [parts["user_id"] for parts in parts_list]
    balances = dict(User.objects.filter(pk__in=set(ids)).values_list("pk", "coin_balance"))
    return {at: {"balance": balances.get(user_id) or 0} for at, user_id in enumerate(ids)}


def _emails_of(scope: WarmScope) -> Iterable[Parts]:
    rows = User.objects.filter(id__in=scope.user_ids).order_by("id").values_list("id", "email")
    return ({"email": email, "user_id": user_id} for user_id, email in rows)


def _user_ids_of(scope: WarmScope) -> Iterable[Parts]:
    return ({"user_id": user_id} for user_id in scope.user_ids)


USER_EMAIL = KeyFamily(
    name="user:email", template="user:email:{email}", ttl_setting="CACHE_TTL_USER_EMAIL", default_ttl=120,
    loader=user_payload_by_email, bulk_loader=user_payloads_by_email, holds="the user's profile and flags",
    enumerate=_emails_of, tag="user_id",
    near=True,  # read by every authenticated request: held in process (core/cache/near.py)
)
USER_COINS = KeyFamily(
    name="user:coins", template="user:coins:{user_id}", ttl_setting="CACHE_TTL_USER_COINS", default_ttl=60,
    loader=coins_payload, bulk_loader=coins_payloads, holds="coin balance", enumerate=_user_ids_of, tag="user_id",
)


def coins_target(*, user_id: int) -> tuple[KeyFamily, Parts]:
    return (USER_COINS, {"user_id": user_id})


def coins_set_to(balance: int) -> Change:
    """``user:coins`` once a write returned the new balance (amend_after_commit)."""
    return lambda cached: {**cached, "balance": balance}


def remember_loaded_email(*, instance: User, **kwargs: object) -> None:
    # So a save that changes the email can invalidate the old address too.
    vars(instance)["_loaded_email"] = vars(instance).get("email")


@invalidates(USER_EMAIL, USER_COINS, triggers=[on("post_save", "accounts.User"), on("post_delete", "accounts.User")])
def flush_user(*, instance: User, **kwargs: object) -> None:
    """Any save (profile, flags, deactivation, password change): old and new email."""
    emails = {instance.email, vars(instance).get("_loaded_email") or instance.email}
    invalidate(
        *((USER_EMAIL, {"email": email, "user_id": instance.pk}) for email in emails),
        (USER_COINS, {"user_id": instance.pk}),
    )
    vars(instance)["_loaded_email"] = instance.email


@invalidates(USER_COINS, triggers=[on("post_save", "accounts.CoinLedgerEntry"),
                                   on("post_delete", "accounts.CoinLedgerEntry")])
def flush_ledger_entry(*, instance: CoinLedgerEntry, **kwargs: object) -> None:
    """Every balance change writes a ledger row (spend, grant, refund)."""
    invalidate((USER_COINS, {"user_id": instance.user_id}))


def _active_users(since: datetime) -> Iterable[int]:
    logged_in = User.objects.filter(Q(last_login__gte=since)).values_list("id", flat=True)
    # order_by(): DISTINCT with the model's ordering would select the ordering's columns too (a row per entry)
    moved_coins = (CoinLedgerEntry.objects.filter(created_at__gte=since).order_by()
                   .values_list("user_id", flat=True).distinct())
    return [*logged_in, *moved_coins]


def connect() -> None:
    from django.db.models.signals import post_init

    register(USER_EMAIL, USER_COINS)
    register_activity("accounts", _active_users)
    connect_receivers(flush_user, flush_ledger_entry)
    post_init.connect(remember_loaded_email, sender=User, dispatch_uid="accounts.cache.remember_loaded_email")
