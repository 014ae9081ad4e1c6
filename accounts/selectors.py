"""Reads of users and coins. Hot reads go through the cache families of accounts/cache.py."""

from __future__ import annotations

from django.db.models import QuerySet

from core.cache.api import Payload, fetch, normalize_email

from .cache import PROFILE_FIELDS, USER_COINS, USER_EMAIL, user_payload
from .models import CoinLedgerEntry, RevokedRefreshToken, User


def user_payload_by_id(*, user_id: int) -> dict | None:
    user = User.objects.filter(pk=user_id).only(*PROFILE_FIELDS).first()
    return None if user is None else user_payload(user)


def user_session_state(*, user_id) -> dict | None:
    """What a token refresh must check, straight from the database."""
    try:
        return User.objects.filter(pk=int(user_id)).values("is_active", "session_version").first()
    except (TypeError, ValueError):
        return None


def refresh_token_revoked(*, jti: str) -> bool:
    """Whether a logout gave this refresh token up."""
    return RevokedRefreshToken.objects.filter(jti=jti).exists()


def user_profile_cached(*, email: str, user_id: int, readahead: dict | None = None) -> Payload:
    """``user:email:{email}``: the profile (JSON ``null`` when no such user). ``user_id`` is who
    asks (the token's user): the cluster key's hash tag; the caller checks the profile's id."""
    return fetch(USER_EMAIL, readahead=readahead, email=normalize_email(email), user_id=user_id)


def user_coins_cached(*, user_id: int, readahead: dict | None = None) -> Payload:
    """``user:coins:{user_id}``: the balance. Display only: spends read the row itself."""
    return fetch(USER_COINS, readahead=readahead, user_id=user_id)


def ledger_list(*, user_id: int) -> QuerySet[CoinLedgerEntry]:
    return CoinLedgerEntry.objects.filter(user_id=user_id).order_by("-id")
