from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from core.cache.api import normalize_email


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra):
        user = self.model(email=normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)

    def get_by_natural_key(self, email: str):
        return self.get(email=normalize_email(email))


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(max_length=254, unique=True)
    display_name = models.CharField(max_length=100, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # Changed only through accounts.services (a conditional UPDATE plus a ledger row).
    coin_balance = models.BigIntegerField(default=0, editable=False)
    # Tokens carry the version they were issued at; a new password refuses the older ones.
    session_version = models.PositiveIntegerField(default=0, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(coin_balance__gte=0), name="user_coin_balance_non_negative"),
            models.UniqueConstraint(Lower("email"), name="user_email_ci_unique"),
        ]

    def save(self, *args, **kwargs):
        self.email = normalize_email(self.email)
        # A new password (set_password leaves it in _password) refuses older tokens. Django's rehash
        # on login (check_password with raised iterations) clears _password first: same password,
        # the sessions stay.
        if self._password is not None:
            self.session_version += 1
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "session_version"}
        if not self._state.adding and not args and kwargs.get("update_fields") is None:
            # The balance changes only through accounts.services (locked UPDATE + ledger row): a
            # full save (admin form, set_password) must not write back a balance it read earlier.
            kwargs["update_fields"] = [
                f.attname for f in self._meta.concrete_fields
                if not f.primary_key and f.attname in self.__dict__ and f.name != "coin_balance"
            ]
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.email


class CoinLedgerEntry(models.Model):
    class Reason(models.TextChoices):
        GRANT = "grant", "Grant"
        PLAN_GRANT = "plan_grant", "Plan grant"
        SPEND = "spend", "Spend"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="ledger")
    amount = models.BigIntegerField()
    reason = models.CharField(max_length=20, choices=Reason.choices)
    reference = models.CharField(max_length=200, blank=True)
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 (NULL = no key: outside the unique constraint)
    balance_after = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="ledger_idempotency_key_unique_per_user",
            ),
            models.CheckConstraint(condition=~models.Q(amount=0), name="ledger_amount_non_zero"),
            models.CheckConstraint(condition=models.Q(balance_after__gte=0), name="ledger_balance_after_non_negative"),
        ]
        indexes = [models.Index(fields=["user", "-id"], name="ledger_user_recent")]
        verbose_name_plural = "coin ledger entries"

    def __str__(self) -> str:
        return f"{self.user}: {self.amount:+d} coins ({self.get_reason_display().lower()})"


class RevokedRefreshToken(models.Model):
    """A refresh token given up at logout: refused by the refresh endpoint until it would have
    expired anyway (rows past that are deleted by the next logout)."""

    jti = models.CharField(max_length=255, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"refresh token of {self.user} (revoked {self.revoked_at:%Y-%m-%d %H:%M})"
