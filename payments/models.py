"""Payments for paid plans and the provider events that move them. Only verified events (or the
provider's own answer to a renewal charge) change a payment; a payment's status only moves forward."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from subscriptions.models import Plan


class Payment(models.Model):
    class Kind(models.TextChoices):
        CHECKOUT = "checkout", "Checkout"  # the user pays on the provider's page
        RENEWAL = "renewal", "Renewal"  # the renewal job charges the saved payment method

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        FAILED = "failed", "Failed"
        SUCCEEDED = "succeeded", "Succeeded"
        REFUNDED = "refunded", "Refunded"

    # Events move a payment only forward: a late "failed" never undoes a success, a late
    # "succeeded" never undoes a refund. A failed checkout may still succeed (another card).
    RANK = {Status.PENDING: 0, Status.FAILED: 1, Status.SUCCEEDED: 2, Status.REFUNDED: 3}

    provider = models.CharField(max_length=20)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="payments")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="payments")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    amount = models.DecimalField(max_digits=8, decimal_places=2)
    currency = models.CharField(max_length=3)
    amount_refunded = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    # The provider's id of this payment (checkout session, payment intent); empty until it answered.
    provider_ref = models.CharField(max_length=255, blank=True, db_index=True)
    # The money movement behind it (Stripe: the payment intent), which refund events name.
    provider_payment_ref = models.CharField(max_length=255, blank=True, db_index=True)
    checkout_url = models.URLField(max_length=1000, blank=True)
    # What renewals charge later (Stripe: the customer and payment method of the paid checkout).
    provider_customer = models.CharField(max_length=255, blank=True)
    provider_payment_method = models.CharField(max_length=255, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    period_start = models.DateTimeField(null=True, blank=True)  # the period this payment started
    coins_granted = models.PositiveIntegerField(default=0)
    coins_reversed = models.PositiveIntegerField(default=0)  # taken back by refunds
    coins_unrecovered = models.PositiveIntegerField(default=0)  # a refund found them already spent

    class Dispute(models.TextChoices):
        NONE = "", "None"
        OPEN = "open", "Open (no money moved yet)"
        WITHDRAWN = "withdrawn", "Funds withdrawn"
        WON = "won", "Won (funds reinstated)"
        LOST = "lost", "Lost"

    # A chargeback, as the provider reports it; it too only moves forward (won and lost are final).
    DISPUTE_RANK = {Dispute.NONE: 0, Dispute.OPEN: 1, Dispute.WITHDRAWN: 2, Dispute.WON: 3, Dispute.LOST: 3}
    dispute = models.CharField(max_length=10, choices=Dispute.choices, default=Dispute.NONE, blank=True)
    coins_disputed = models.PositiveIntegerField(default=0)  # taken back when the dispute's funds were withdrawn
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # The job charges a subscription once at a time, however many runs overlap.
            models.UniqueConstraint(
                fields=["user"], condition=models.Q(kind="renewal", status="pending"),
                name="payment_one_pending_renewal_per_user",
            ),
        ]

    def __str__(self) -> str:
        return f"Payment {self.pk}: {self.plan} for {self.user}, {self.amount} {self.currency.upper()} ({self.status})"


class PaymentEvent(models.Model):
    """Every verified event a provider sent, once: (provider, event_id) is unique, so a replayed
    or concurrent duplicate delivery finds the row and changes nothing."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Applied"
        STALE = "stale", "Stale (the payment is already further along)"
        IGNORED = "ignored", "Ignored (not a payment event)"
        UNMATCHED = "unmatched", "Unmatched (no such payment yet)"
        AMOUNT_MISMATCH = "amount_mismatch", "Amount or currency differs"

    provider = models.CharField(max_length=20)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="events")
    # What the event names, to match it to a payment that is recorded (or learns these ids) later:
    # the provider's object (checkout session, charge...) and the money movement (payment intent).
    payment_ref = models.CharField(max_length=255, blank=True, db_index=True)
    payment_intent = models.CharField(max_length=255, blank=True, db_index=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="payment_event_unique")]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_id} {self.type} ({self.outcome})"


class PlanGrant(models.Model):
    """A plan period granted by staff without payment, with the reason."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="plan_grants")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    coins_granted = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.plan} for {self.user}"
