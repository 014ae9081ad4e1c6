"""Writes of payments: checkouts, provider events, renewal charges, refunds, staff grants.

The subscription itself changes only through subscriptions.services, and coins only through
accounts.services.coins_apply, so the caches follow every change after commit like any other write.
Provider calls (network, for a real provider) never run inside a transaction.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import exceptions

from accounts.models import CoinLedgerEntry, User
from accounts.services import coins_apply
from subscriptions.models import Plan, Subscription
from subscriptions.services import (
    Change,
    plan_get_active,
    subscription_change,
    subscription_end_now,
    subscription_mark_past_due,
    subscription_period_restore,
    subscription_period_start,
    subscriptions_expire,
)

from . import selectors
from .checks import currency_valid
from .models import Payment, PaymentEvent, PlanGrant
from .providers import Charge, Event, ProviderError, ProviderUnavailable, provider_get, provider_unconfigured

Status = Payment.Status
Outcome = PaymentEvent.Outcome
logger = logging.getLogger("payments")


def subscription_request(
    *, user_id: int, plan_code: str, base_url: str
) -> tuple[Change, Subscription | None, Payment | None]:
    """``POST /api/subscription``: what needs no payment happens now; a paid plan gets a checkout
    (a pending Payment) and nothing else changes until the provider reports the payment."""
    sub, change = subscription_change(user_id=user_id, plan_code=plan_code)
    if change != Change.PAYMENT_REQUIRED:
        return change, sub, None
    payment = checkout_create(user_id=user_id, plan=plan_get_active(plan_code=plan_code), base_url=base_url)
    return change, sub, payment


# What a checkout replaced by a newer one (another plan, a new price) says; it can no longer be paid.
CHECKOUT_REPLACED = "replaced by a newer checkout"
# A checkout without its page yet is another request's, talking to the provider right now: wait
# this long for it, then answer 409. Older, that request died: the checkout is replaced.
CHECKOUT_CREATING = timedelta(seconds=30)
CHECKOUT_WAIT_SECONDS = 10.0


class CheckoutInProgress(exceptions.APIException):
    status_code = 409
    default_detail = "A checkout for this account is being created; try again in a moment."
    default_code = "checkout_in_progress"


def checkout_create(*, user_id: int, plan: Plan, base_url: str) -> Payment:
    """One pending checkout per user: asking again returns it while it matches the plan's current
    price, otherwise it is replaced (and closed at the provider). Concurrent requests take the
    user's row lock in turn, so they find the first one's checkout instead of making their own."""
    provider = provider_get()
    currency = _currency()
    deadline = time.monotonic() + CHECKOUT_WAIT_SECONDS
    while (found := _checkout_reuse_or_start(user_id=user_id, plan=plan, provider=provider.name,
                                             currency=currency)) is None:
        if time.monotonic() > deadline:
            raise CheckoutInProgress()
        time.sleep(0.05)  # another request is at the provider: its checkout is ours too
    payment, replaced = found
    if payment.checkout_url:
        return payment
    for old in replaced:  # so an old price or plan cannot be paid any more
        try:
            provider.checkout_close(payment=old)
        except ProviderError as exc:
            logger.warning("payment %s: the provider did not close its replaced checkout: %s", old.pk, exc)
    email = User.objects.values_list("email", flat=True).get(pk=user_id)
    try:
        checkout = provider.checkout_create(payment=payment, email=email, base_url=base_url)
    except ProviderError as exc:
        Payment.objects.filter(pk=payment.pk).update(status=Status.FAILED, failure_reason=str(exc)[:500])
        raise ProviderUnavailable() from None
    payment.provider_ref, payment.checkout_url = checkout.ref, checkout.url
    payment.save(update_fields=["provider_ref", "checkout_url", "updated_at"])
    _events_replay(payment)
    return payment


def _checkout_reuse_or_start(
    *, user_id: int, plan: Plan, provider: str, currency: str
) -> tuple[Payment, list[Payment]] | None:
    """Under the user's row lock: the reusable pending checkout, or a new pending payment (committed
    before the provider hears of it, so its events always find the row) and the checkouts it
    replaced; None while another request is creating one."""
    with transaction.atomic():
        User.objects.select_for_update().only("id").get(pk=user_id)
        pending = selectors.checkouts_pending(user_id=user_id, provider=provider)
        if any(not p.checkout_url and p.created_at > timezone.now() - CHECKOUT_CREATING for p in pending):
            return None
        if pending and selectors.checkout_reusable(pending[0], plan=plan, currency=currency):
            return pending[0], []
        Payment.objects.filter(pk__in=[p.pk for p in pending]).update(
            status=Status.FAILED, failure_reason=CHECKOUT_REPLACED, updated_at=timezone.now())
        payment = Payment.objects.create(provider=provider, user_id=user_id, plan=plan, kind=Payment.Kind.CHECKOUT,
                                         amount=plan.price, currency=currency)
        return payment, [p for p in pending if p.provider_ref]


def _currency() -> str:
    """PAYMENT_CURRENCY, or a 503 (not a database error, a 500) if it is not a currency code."""
    if not currency_valid(settings.PAYMENT_CURRENCY):
        raise provider_unconfigured(f"PAYMENT_CURRENCY {settings.PAYMENT_CURRENCY!r} is not a currency code")
    return settings.PAYMENT_CURRENCY


def webhook_receive(*, provider_name: str, body: bytes, headers) -> str:
    """A provider's webhook delivery: verified (SignatureInvalid otherwise), then applied once."""
    provider = provider_get(provider_name)
    return event_apply(provider_name=provider.name, event=provider.event_verify(body=body, headers=headers))


def event_apply(*, provider_name: str, event: Event) -> str:
    """Record the event once and move its payment. A replayed or concurrent duplicate finds the
    unique (provider, event_id) row taken and changes nothing."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                row = PaymentEvent.objects.create(
                    provider=provider_name, event_id=event.id, type=event.type[:100], payload=event.payload,
                    payment_ref=event.payment_ref, payment_intent=event.payment_intent, outcome=Outcome.UNMATCHED,
                )
        except IntegrityError:  # the same event, delivered before (or right now by another worker)
            return "duplicate"
        payment = _payment_for(provider_name=provider_name, event=event)
        if payment is None:  # kept: the payment may be recorded later (see _events_replay)
            row.outcome = Outcome.UNMATCHED if event.outcome or event.dispute else Outcome.IGNORED
        else:
            row.payment, row.outcome = payment, _transition(payment, event)
        row.save(update_fields=["payment", "outcome"])
        if payment is not None:  # it may have learned an id that an earlier event named (a refund's intent)
            _events_replay_locked(payment)
        return row.outcome


def _payment_for(*, provider_name: str, event: Event) -> Payment | None:
    payments = Payment.objects.select_for_update().filter(provider=provider_name)
    if event.payment_id is not None:
        payment = payments.filter(pk=event.payment_id).first()
        if payment is not None:
            return payment
    refs = {ref for ref in (event.payment_ref, event.payment_intent) if ref}
    if not refs:
        return None
    return payments.filter(Q(provider_ref__in=refs) | Q(provider_payment_ref__in=refs)).first()


def _events_replay(payment: Payment) -> int:
    """Events that arrived before their payment could be matched are applied now, in order."""
    with transaction.atomic():
        return _events_replay_locked(Payment.objects.select_for_update().get(pk=payment.pk))


def _events_replay_locked(payment: Payment) -> int:
    """The waiting (unmatched) events that name one of the locked payment's ids, applied in the
    order they arrived: e.g. a refund delivered before the checkout's own event, which is what
    tells us the payment intent the refund names. Returns how many it applied to the payment.

    Every replay holds the payment's row lock and re-reads the waiting rows under their own
    (``select_for_update``: a row another replay took meanwhile is no longer unmatched, and is
    skipped), so each waiting event is applied once, whoever replays it."""
    refs = {ref for ref in (payment.provider_ref, payment.provider_payment_ref) if ref}
    if not refs:
        return 0
    waiting = (
        PaymentEvent.objects.select_for_update()
        .filter(Q(payment_ref__in=refs) | Q(payment_intent__in=refs),
                provider=payment.provider, payment=None, outcome=Outcome.UNMATCHED)
        .order_by("id")
    )
    provider = None
    count = 0
    for row in waiting:
        provider = provider or provider_get(payment.provider)
        row.payment, row.outcome = payment, _transition(payment, provider.event_read(row.payload))
        row.save(update_fields=["payment", "outcome"])
        count += 1
    return count


def events_sweep() -> int:
    """Apply the waiting (unmatched) events whose payment is known by now; returns how many.

    A payment replays its waiting events whenever it learns an id (``_events_replay``), but an
    event committed in the same instant as that payment's own (each transaction blind to the other's
    uncommitted row) is seen by neither and would wait for good. The periodic job sweeps them up
    through the same replay, under the same locks, so a webhook delivery or another sweep running
    at once applies each event once between them. Events of payments still unknown keep waiting."""
    applied = 0
    for payment_id in selectors.payments_awaited_by_events():
        applied += _events_replay(Payment(pk=payment_id))
    return applied


def _transition(payment: Payment, event: Event) -> str:
    """Move a locked payment as the event says, only forward; activate, fail or refund."""
    _remember(payment, event)
    if event.dispute:
        return _dispute(payment, event)
    if event.outcome is None:
        payment.save()
        return Outcome.IGNORED
    if event.outcome == Status.REFUNDED:
        return _refund(payment, event)
    if Payment.RANK[payment.status] >= Payment.RANK[event.outcome]:
        payment.save()
        return Outcome.STALE  # e.g. a "failed" after the success, or the same success from another event
    if event.outcome == Status.SUCCEEDED:
        if (event.amount is not None and event.amount < payment.amount) or (
            event.currency and event.currency.lower() != payment.currency.lower()
        ):
            payment.save()
            return Outcome.AMOUNT_MISMATCH
        payment.status = Status.SUCCEEDED
        if payment.user_id is not None:
            sub = subscription_period_start(user_id=payment.user_id, plan=payment.plan, grant_key=f"payment:{payment.pk}")
            payment.period_start, payment.coins_granted = sub.current_period_start, payment.plan.coins_per_period
            if payment.amount_refunded:  # a partial refund reported before the payment: its share goes back now
                _coins_reverse(payment)
                _period_end_if_refunded(payment)
    else:
        payment.status, payment.failure_reason = Status.FAILED, (event.reason or "declined")[:500]
        if payment.kind == Payment.Kind.RENEWAL and payment.user_id is not None:
            _renewal_failed(user_id=payment.user_id)
    payment.save()
    return Outcome.APPLIED


def _remember(payment: Payment, event: Event) -> None:
    """What the provider tells us about the payment, whichever event says it first."""
    if event.payment_intent and not payment.provider_payment_ref:
        payment.provider_payment_ref = event.payment_intent
    if event.customer and event.customer != payment.provider_customer:
        payment.provider_customer = event.customer
    if event.payment_method:
        payment.provider_payment_method = event.payment_method


def _renewal_failed(*, user_id: int) -> None:
    """The first failed renewal charge starts the grace period; later ones leave it as it is."""
    sub = Subscription.objects.filter(user_id=user_id).first()
    now = timezone.now()
    if sub is not None and sub.status == Subscription.Status.ACTIVE and sub.auto_renew and sub.current_period_end <= now:
        subscription_mark_past_due(user_id=user_id, until=now + timedelta(days=settings.PAYMENT_GRACE_DAYS))


def _refund(payment: Payment, event: Event) -> str:
    """Take back the refunded share of the payment's coins, never below zero (what was already
    spent is recorded as unrecovered); a refund worth the days left of the period it paid for ends
    that period now (``_period_end_if_refunded``)."""
    refunded = min(payment.amount, event.amount if event.amount is not None else payment.amount)
    if payment.status == Status.REFUNDED or refunded <= payment.amount_refunded:
        payment.save()
        return Outcome.STALE
    payment.amount_refunded = refunded
    if payment.status == Status.SUCCEEDED:
        _coins_reverse(payment)
        _period_end_if_refunded(payment)
    if refunded >= payment.amount:
        payment.status = Status.REFUNDED
    payment.save()
    return Outcome.APPLIED


def _period_end_if_refunded(payment: Payment) -> None:
    """The partial refund rule: the period a payment started ends now once the refunded amount is at
    least the value of the whole days left in it (price * days left / period days), a full refund
    always; a smaller refund is goodwill and leaves the period running (its share of coins is still
    taken back). So 29.98 of 29.99 on the first day ends the period; 15.00 of it does not, until
    fewer than 15 of its 30 days are left. A later period (an upgrade, a renewal) is left alone."""
    sub = _period_of(payment)
    if sub is None or not payment.amount_refunded:
        return
    days_left = max(0, (sub.current_period_end - timezone.now()) // timedelta(days=1))
    value_left = payment.amount * Decimal(days_left) / Decimal(max(1, settings.SUBSCRIPTION_PERIOD_DAYS))
    if payment.amount_refunded >= min(value_left, payment.amount):
        subscription_end_now(user_id=payment.user_id)


def _dispute(payment: Payment, event: Event) -> str:
    """A chargeback: when its funds are withdrawn (or it is lost without a withdrawal reported),
    the payment's coins still held go back and the period it started ends, as a full refund does;
    when it is won, the coins taken and the rest of that period come back. Forward only: won and
    lost are final, a second report of the same step is stale."""
    Dispute = Payment.Dispute
    rank = Payment.DISPUTE_RANK
    if payment.status not in (Status.SUCCEEDED, Status.REFUNDED) or rank[event.dispute] <= rank[payment.dispute]:
        payment.save()
        return Outcome.STALE
    previous, payment.dispute = payment.dispute, event.dispute
    taken = previous == Dispute.WITHDRAWN
    if event.dispute in (Dispute.WITHDRAWN, Dispute.LOST) and not taken:
        _dispute_take_back(payment)
    elif event.dispute == Dispute.WON and taken:
        _dispute_restore(payment)
    payment.save()
    return Outcome.APPLIED


def _dispute_take_back(payment: Payment) -> None:
    if payment.user_id is None:
        return
    held = payment.coins_granted - payment.coins_reversed - payment.coins_unrecovered
    if held > 0:
        balance = User.objects.select_for_update().values_list("coin_balance", flat=True).get(pk=payment.user_id)
        payment.coins_disputed = min(held, balance)  # never below zero: what is spent stays spent
        if payment.coins_disputed:
            coins_apply(user_id=payment.user_id, amount=-payment.coins_disputed,
                        reason=CoinLedgerEntry.Reason.ADJUSTMENT, reference=f"dispute:payment:{payment.pk}",
                        idempotency_key=f"payment:{payment.pk}:dispute")
    if _period_of(payment) is not None:
        subscription_end_now(user_id=payment.user_id)


def _dispute_restore(payment: Payment) -> None:
    if payment.user_id is None:
        return
    if payment.coins_disputed:
        coins_apply(user_id=payment.user_id, amount=payment.coins_disputed, reason=CoinLedgerEntry.Reason.ADJUSTMENT,
                    reference=f"dispute_won:payment:{payment.pk}", idempotency_key=f"payment:{payment.pk}:dispute_won")
    if _period_of(payment) is not None and payment.period_start is not None:
        subscription_period_restore(user_id=payment.user_id, plan=payment.plan, period_start=payment.period_start,
                                    until=payment.period_start + timedelta(days=settings.SUBSCRIPTION_PERIOD_DAYS))


def _period_of(payment: Payment) -> Subscription | None:
    """The user's subscription while it is still the period this payment started."""
    if payment.user_id is None:
        return None
    sub = Subscription.objects.filter(user_id=payment.user_id).first()
    if sub is None or sub.plan_id != payment.plan_id or sub.current_period_start != payment.period_start:
        return None
    return sub


def _coins_reverse(payment: Payment) -> None:
    """Take back the share of a paid payment's coins that its refunded amount stands for, less
    what was taken (or found spent) before; never below zero: what is already spent is recorded
    as unrecovered."""
    if not payment.coins_granted or payment.user_id is None or not payment.amount:
        return
    share = int(Decimal(payment.coins_granted) * payment.amount_refunded / payment.amount)
    owed = share - payment.coins_reversed - payment.coins_unrecovered
    if owed <= 0:
        return
    balance = User.objects.select_for_update().values_list("coin_balance", flat=True).get(pk=payment.user_id)
    take = min(owed, balance)
    if take:
        coins_apply(user_id=payment.user_id, amount=-take, reason=CoinLedgerEntry.Reason.ADJUSTMENT,
                    reference=f"refund:payment:{payment.pk}",
                    idempotency_key=f"payment:{payment.pk}:refund:{payment.amount_refunded}")
    payment.coins_reversed += take
    payment.coins_unrecovered += owed - take


# --- renewals -----------------------------------------------------------------------------------


def renewals_run(*, now: datetime | None = None) -> dict[str, int]:
    """The periodic job (``manage.py subscriptions_renew``): waiting provider events whose payment
    is known by now are applied (``events_sweep``: a refund first, so a refunded payment's period is
    not renewed on its account); due subscriptions on a free plan start a new period; paid ones are
    charged through the provider (a failure: past due, retried every PAYMENT_RETRY_HOURS within
    PAYMENT_GRACE_DAYS); whatever is past its end then expires."""
    now = now or timezone.now()
    counts = {"events_applied": events_sweep(), "renewed": 0, "failed": 0}
    for user_id in selectors.subscriptions_to_charge(now=now):
        result = renewal_charge(user_id=user_id, now=now)
        if result in counts:
            counts[result] += 1
    counts["expired"] = subscriptions_expire(now=now)
    return counts


def renewal_charge(*, user_id: int, now: datetime) -> str:
    """Renew one subscription: "renewed", "failed" or "skipped" (no longer due)."""
    provider = provider_get()
    with transaction.atomic():
        User.objects.select_for_update().only("id").get(pk=user_id)  # one renewal at a time per user
        sub = Subscription.objects.select_related("plan", "next_plan").filter(user_id=user_id).first()
        if sub is None or not selectors.subscription_due(sub, now=now):
            return "skipped"
        plan = sub.next_plan or sub.plan
        if not plan.is_active:
            return "skipped"  # a withdrawn plan does not renew: it expires
        if plan.price <= 0:
            subscription_period_start(user_id=user_id, plan=plan)
            return "renewed"
        # An attempt that died before the provider answered is charged again under the same
        # payment (its idempotency key), never as a second payment.
        payment = Payment.objects.filter(user_id=user_id, kind=Payment.Kind.RENEWAL, status=Status.PENDING).first()
        if payment is None:
            payment = Payment.objects.create(
                provider=provider.name, user_id=user_id, plan=plan, kind=Payment.Kind.RENEWAL,
                amount=plan.price, currency=_currency(),
            )
    try:
        charge = provider.renewal_charge(payment=payment, previous=selectors.payment_method_source(user_id=user_id))
    except ProviderError as exc:  # counts as a failed attempt: retried later, within the grace period
        charge = Charge(succeeded=False, reason=f"provider error: {exc}")
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment.pk)
        if charge.ref and not payment.provider_ref:
            payment.provider_ref = payment.provider_payment_ref = charge.ref
        outcome = Status.SUCCEEDED if charge.succeeded else Status.FAILED
        event = Event(id="", type="renewal.charge", payload={}, outcome=outcome, reason=charge.reason)
        applied = _transition(payment, event) == Outcome.APPLIED
        _events_replay_locked(payment)  # events that named the charge before we knew its id
        if not applied:
            return "skipped"  # an overlapping run (or the provider's webhook) got there first
        return "renewed" if charge.succeeded else "failed"


# --- staff --------------------------------------------------------------------------------------


def plan_grant(*, user_id: int, plan: Plan, reason: str, granted_by_id: int | None) -> PlanGrant:
    """Staff give a plan period without payment, with the reason recorded. It does not renew by
    itself (nobody agreed to be charged); asking for the same plan later turns renewal on."""
    reason = (reason or "").strip()
    if not reason:
        raise exceptions.ValidationError({"reason": ["Say why the plan is granted."]})
    with transaction.atomic():
        grant = PlanGrant.objects.create(user_id=user_id, plan=plan, reason=reason, granted_by_id=granted_by_id,
                                         coins_granted=plan.coins_per_period)
        subscription_period_start(user_id=user_id, plan=plan, grant_key=f"plan_grant:{grant.pk}", auto_renew=False)
    return grant
