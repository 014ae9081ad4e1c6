from django.conf import settings
from django.db import models
from django.utils import timezone


class Plan(models.Model):
    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    coins_per_period = models.PositiveIntegerField(default=0)
    daily_generation_limit = models.PositiveIntegerField(default=0)
    daily_message_limit = models.PositiveIntegerField(default=0)
    includes_premium = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    sort_order = models.IntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "id"]

    def __str__(self) -> str:
        return self.name


class Subscription(models.Model):
    """One row per user: the current subscription, changed in place by the services."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        CANCELLED = "cancelled", "Cancelled"  # access until the period ends, no renewal
        # The renewal charge failed: access until current_period_end, which is then the grace end.
        PAST_DUE = "past_due", "Past due"
        EXPIRED = "expired", "Expired"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscription")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    current_period_start = models.DateTimeField(default=timezone.now)
    current_period_end = models.DateTimeField()
    auto_renew = models.BooleanField(default=True)
    # A downgrade waits for the period end: the next period is on this plan.
    next_plan = models.ForeignKey(Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    # The last renewal charge failed: the period runs on grace, unpaid, until a payment starts a new
    # one. Kept through a cancel, so cancelling and asking for the plan again never skips the payment.
    payment_failed = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.plan} ({self.status})"


class DailyUsage(models.Model):
    """What a user used on one UTC day: the one count that both the daily limits and the usage
    stats read. Changed only by ``subscriptions.services.usage_count``/``usage_release``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    generations = models.PositiveIntegerField(default=0)
    messages = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "day"], name="daily_usage_one_row_per_day")]

    def __str__(self) -> str:
        return f"{self.user} {self.day}: {self.generations} generations, {self.messages} messages"
