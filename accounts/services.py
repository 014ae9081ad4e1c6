"""Writes of users and coins. Every balance change is one conditional row update plus a ledger row."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import post_save
from django.utils import timezone
from rest_framework import exceptions

from core.cache.api import normalize_email
from core.http.exceptions import PaymentRequired

from .models import CoinLedgerEntry, RevokedRefreshToken, User


def _validate_password(password: str, user: User) -> None:
    """Django's validators raise a field-less error: report it under ``password``."""
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise exceptions.ValidationError({"password": exc.messages}, code="weak_password") from exc


def user_register(*, email: str, password: str, display_name: str = "") -> User:
    """A new user; ``subscriptions`` starts them on the free plan in this transaction (a receiver
    of the user's creation, so accounts need not know of plans)."""
    email = normalize_email(email)
    candidate = User(email=email, display_name=display_name)
    _validate_password(password, user=candidate)
    with transaction.atomic():
        if User.objects.filter(email__iexact=email).exists():
            raise exceptions.ValidationError({"email": ["A user with this email already exists."]}, code="email_taken")
        try:
            with transaction.atomic():
                user = User.objects.create_user(email=email, password=password, display_name=display_name)
        except IntegrityError:  # lost a race with a concurrent registration of the same email
            raise exceptions.ValidationError({"email": ["A user with this email already exists."]}, code="email_taken") from None
    return user


def user_update(
    *, user_id: int, display_name: str | None = None, email: str | None = None, current_password: str | None = None
) -> User:
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user_id)
        if email is not None and normalize_email(email) != user.email:
            if not current_password or not user.check_password(current_password):
                raise exceptions.ValidationError(
                    {"current_password": ["Your current password is required to change the email."]}
                )
            email = normalize_email(email)
            if User.objects.filter(email__iexact=email).exclude(pk=user_id).exists():
                raise exceptions.ValidationError({"email": ["A user with this email already exists."]})
            user.email = email
        if display_name is not None:
            user.display_name = display_name
        user.save()  # post_save invalidates user:email for the old and the new address
    return user


def user_change_password(*, user_id: int, current_password: str, new_password: str) -> User:
    """Set a new password; tokens issued before it are refused (session_version moves on)."""
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user_id)
        if not user.check_password(current_password):
            raise exceptions.ValidationError({"current_password": ["This is not your current password."]})
        try:
            validate_password(new_password, user=user)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError({"new_password": list(exc.messages)}) from None
        user.set_password(new_password)
        user.save()  # post_save invalidates user:email: the next request sees the new version
    return user


def coins_apply(
    *,
    user_id: int,
    amount: int,
    reason: str,
    reference: str = "",
    idempotency_key: str | None = None,
) -> CoinLedgerEntry:
    """Add (amount > 0) or spend (amount < 0) coins: one balance update, one ledger row.

    Decided by the database row, never by the cached balance: a conditional UPDATE (the balance
    moves only if it stays >= 0) that the database serialises on the row, so concurrent spends
    never overdraw (the CHECK constraint is only a safety net). Raises PaymentRequired when the
    balance is short. With an idempotency key the user row is locked first and a retry returns the
    first entry without charging again. Runs in the caller's transaction when there is one (no
    savepoint: an error here fails the caller's whole write). The ledger row's post_save
    invalidates ``user:coins`` and ``subscription:stats``.
    """
    if amount == 0:
        raise exceptions.ValidationError({"amount": ["Amount must not be zero."]})
    with transaction.atomic(savepoint=False):
        if idempotency_key is not None:
            User.objects.select_for_update().only("id").get(pk=user_id)  # one retry at a time
            existing = CoinLedgerEntry.objects.filter(user_id=user_id, idempotency_key=idempotency_key).first()
            if existing is not None:
                return existing
        balance_after = _balance_move(user_id=user_id, amount=amount)
        if balance_after is None:
            raise PaymentRequired()
        return _ledger_record(CoinLedgerEntry(user_id=user_id, amount=amount, reason=str(reason),
                                              reference=reference[:200], idempotency_key=idempotency_key,
                                              balance_after=balance_after))


# The balance's two statements are written out (PostgreSQL, SQLite 3.35+): the ORM's update()
# cannot return the new balance, and on this path (every charge) the ORM's query building costs
# several times the statement's round trip.

def _balance_move(*, user_id: int, amount: int) -> int | None:
    """Move the balance by ``amount`` unless it would go below zero: the new balance, or None when
    nothing changed. One conditional ``UPDATE ... RETURNING``, which the database serialises on
    the row."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {connection.ops.quote_name(User._meta.db_table)} SET coin_balance = coin_balance + %s"
            " WHERE id = %s AND coin_balance + %s >= 0 RETURNING coin_balance",
            [amount, user_id, amount],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def _ledger_record(entry: CoinLedgerEntry) -> CoinLedgerEntry:
    """Insert the ledger row and send its post_save as the ORM's save() would (its receivers
    invalidate, or amend, ``user:coins`` and ``subscription:stats``)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(CoinLedgerEntry._meta.db_table)}"
            " (user_id, amount, reason, reference, idempotency_key, balance_after, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [entry.user_id, entry.amount, entry.reason, entry.reference, entry.idempotency_key, entry.balance_after,
             connection.ops.adapt_datetimefield_value(entry.created_at)],
        )
        (entry.pk,) = cursor.fetchone()
    entry._state.adding, entry._state.db = False, connection.alias
    post_save.send(sender=CoinLedgerEntry, instance=entry, created=True, update_fields=None, raw=False,
                   using=connection.alias)
    return entry


ADMIN_COIN_KINDS = {
    # kind: (ledger reason, sign of the amount)
    "grant": (CoinLedgerEntry.Reason.GRANT, 1),
    "refund": (CoinLedgerEntry.Reason.REFUND, 1),
    "deduct": (CoinLedgerEntry.Reason.ADJUSTMENT, -1),
}


def coins_admin_adjust(*, user_id: int, kind: str, amount: int, note: str, staff_email: str) -> CoinLedgerEntry:
    """A staff member grants, refunds or deducts coins: one ledger entry whose reference records
    who did it and why. A deduction larger than the balance raises PaymentRequired (the balance
    never goes below zero)."""
    reason, sign = ADMIN_COIN_KINDS[kind]
    if amount <= 0:
        raise exceptions.ValidationError({"amount": ["Give a positive number of coins."]})
    note = note.strip()
    if not note:
        raise exceptions.ValidationError({"note": ["Say why."]})
    return coins_apply(user_id=user_id, amount=sign * amount, reason=reason, reference=f"admin {staff_email}: {note}")


def coins_spend(*, user_id: int, cost: int, reference: str) -> CoinLedgerEntry:
    """Spend ``cost`` coins on something (``reference`` names it); PaymentRequired when short."""
    return coins_apply(user_id=user_id, amount=-cost, reason=CoinLedgerEntry.Reason.SPEND, reference=reference)


def refresh_token_revoke(*, user_id: int, jti: str, expires_at: datetime) -> None:
    """Logout of one session: its refresh token is refused from now on (the access tokens it gave
    lapse within JWT_ACCESS_MINUTES). Idempotent; rows of tokens expired by now go at the same time."""
    RevokedRefreshToken.objects.filter(expires_at__lt=timezone.now()).delete()
    RevokedRefreshToken.objects.get_or_create(jti=jti, defaults={"user_id": user_id, "expires_at": expires_at})


def user_end_sessions(*, user_id: int) -> User:
    """Logout everywhere: every access and refresh token issued so far is refused at once, as after
    a password change (session_version moves on)."""
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user_id)
        user.session_version += 1
        user.save(update_fields=["session_version"])  # post_save invalidates user:email
    return user
