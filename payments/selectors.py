"""Reads of payments."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from subscriptions.models import Plan, Subscription

from .models import Payment, PaymentEvent

# A checkout asked for again within this time is the same checkout (Stripe keeps one open 24 h).
CHECKOUT_REUSE = timedelta(hours=1)


def checkouts_pending(*, user_id: int, provider: str) -> list[Payment]:
    """The user's pending checkouts with ``provider``, newest first (one, unless from before checkouts
    were serialised per user)."""
    return list(Payment.objects.filter(user_id=user_id, provider=provider, kind=Payment.Kind.CHECKOUT,
                                       status=Payment.Status.PENDING).order_by("-id"))


def checkout_reusable(payment: Payment, *, plan: Plan, currency: str) -> bool:
    """Whether a pending checkout is what asking for ``plan`` now would create: the same plan at its
    current price and currency, recent, and open at the provider (it has its page)."""
    return (
        payment.plan_id == plan.pk and payment.amount == plan.price and payment.currency == currency
        and bool(payment.checkout_url) and payment.created_at >= timezone.now() - CHECKOUT_REUSE
    )


def subscriptions_to_charge(*, now: datetime, user_id: int | None = None) -> QuerySet:
    """User ids of subscriptions the renewal job charges now: renewing ones past their period end,
    and past-due ones within their grace whose last attempt is PAYMENT_RETRY_HOURS old."""
    last_attempt = (
        Payment.objects.filter(user_id=OuterRef("user_id"), kind=Payment.Kind.RENEWAL)
        .order_by("-created_at")
        .values("created_at")[:1]
    )
    retry_before = now - timedelta(hours=settings.PAYMENT_RETRY_HOURS)
    due = Subscription.objects.filter(auto_renew=True).annotate(last_attempt=Subquery(last_attempt)).filter(
        Q(status=Subscription.Status.ACTIVE, current_period_end__lte=now)
        | (
            Q(status=Subscription.Status.PAST_DUE, current_period_end__gt=now)
            & (Q(last_attempt__isnull=True) | Q(last_attempt__lte=retry_before))
        )
    )
    if user_id is not None:
        due = due.filter(user_id=user_id)
    return due.values_list("user_id", flat=True)


def subscription_due(sub: Subscription, *, now: datetime) -> bool:
    return subscriptions_to_charge(now=now, user_id=sub.user_id).exists()


def payment_method_source(*, user_id: int) -> Payment | None:
    """The last paid payment with a saved payment method: what a renewal charges."""
    return (
        Payment.objects.filter(user_id=user_id, provider=settings.PAYMENT_PROVIDER, status=Payment.Status.SUCCEEDED)
        .exclude(provider_customer="")
        .order_by("-id")
        .first()
    )


def payments_awaited_by_events() -> list[int]:
    """Ids of the configured provider's payments that some waiting (unmatched) event names by one
    of their ids (provider_ref, provider_payment_ref), oldest first: what ``events_sweep`` replays.
    Events naming no payment here (another integration's, ``stripe trigger``'s) match nothing."""
    provider = settings.PAYMENT_PROVIDER
    waiting = PaymentEvent.objects.filter(provider=provider, payment=None, outcome=PaymentEvent.Outcome.UNMATCHED)
    refs = waiting.exclude(payment_ref="").values("payment_ref")
    intents = waiting.exclude(payment_intent="").values("payment_intent")
    named = (Q(provider_ref__in=refs) | Q(provider_ref__in=intents)
             | Q(provider_payment_ref__in=refs) | Q(provider_payment_ref__in=intents))
    return list(Payment.objects.filter(named, provider=provider).order_by("id").values_list("pk", flat=True))


def checkout_payload(payment: Payment) -> dict:
    return {
        "id": payment.pk,
        "provider": payment.provider,
        "status": payment.status,
        "plan": payment.plan.code,
        "amount": str(payment.amount),
        "currency": payment.currency,
        "checkout_url": payment.checkout_url,
        "checkout_id": payment.provider_ref,
    }


def offline_checkout_get(*, ref: str) -> Payment:
    from rest_framework.exceptions import NotFound

    payment = (
        Payment.objects.select_related("plan")
        .filter(provider="offline", kind=Payment.Kind.CHECKOUT, provider_ref=ref)
        .first()
    )
    if payment is None:
        raise NotFound("No such checkout.")
    return payment
