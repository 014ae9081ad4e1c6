"""Reads of users and coins. Hot reads go through the cache; loaders build plain data."""

from __future__ import annotations

from django.db.models import QuerySet

from core.cache import registry
from core.cache.keys import normalize_email
from core.cache.store import Payload, fetch
from core.formatting import iso_utc

from .models import CoinLedgerEntry, User

_PROFILE_FIELDS = ("id", "email", "display_name", "is_active", "is_staff", "date_joined", "session_version")


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


def user_payload_by_email(*, email: str) -> dict | None:
    user = User.objects.filter(email=normalize_email(email)).only(*_PROFILE_FIELDS).first()
    return None if user is None else user_payload(user)


def user_payload_by_id(*, user_id: int) -> dict | None:
    user = User.objects.filter(pk=user_id).only(*_PROFILE_FIELDS).first()
    return None if user is None else user_payload(user)


def user_session_state(*, user_id) -> dict | None:
    """What a token refresh must check, straight from the database."""
    try:
        return User.objects.filter(pk=int(user_id)).values("is_active", "session_version").first()
    except (TypeError, ValueError):
        return None


def user_profile_cached(*, email: str, readahead: dict | None = None) -> Payload:
    """``user:email:{email}``: the profile (JSON ``null`` when no such user)."""
    return fetch(registry.USER_EMAIL, readahead=readahead, email=normalize_email(email))


def coins_payload(*, user_id: int) -> dict:
    balance = User.objects.filter(pk=user_id).values_list("coin_balance", flat=True).first()
    return {"balance": balance or 0}


def user_coins_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    """``user:coins:{user_id}``: the balance. Display only: spends read the row itself."""
    return fetch(registry.USER_COINS, readahead=readahead, user_id=user_id)


def ledger_list(*, user_id: int) -> QuerySet[CoinLedgerEntry]:
    return CoinLedgerEntry.objects.filter(user_id=user_id).order_by("-id")
