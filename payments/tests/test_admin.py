"""Admin: payments and events are read-only and searchable; staff grant a plan with a reason."""

import pytest

from accounts.models import User
from payments.models import Payment, PaymentEvent, PlanGrant
from tests.support.payments import plan_pay

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def paid(user):
    return plan_pay(user_id=user.id, plan_code="pro")


@pytest.mark.parametrize("model", ["payment", "paymentevent"])
def test_payments_and_events_render_and_are_read_only(staff, paid, model):
    obj = Payment.objects.get() if model == "payment" else PaymentEvent.objects.get()
    assert staff.get(f"/admin/payments/{model}/").status_code == 200
    assert staff.get(f"/admin/payments/{model}/{obj.pk}/change/").status_code == 200
    assert staff.get(f"/admin/payments/{model}/add/").status_code == 403
    assert staff.post(f"/admin/payments/{model}/{obj.pk}/change/", {"status": "refunded"}).status_code == 403
    assert staff.post(f"/admin/payments/{model}/{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Payment.objects.get().status == "succeeded"


def test_payments_are_searchable(staff, paid, make_user):
    plan_pay(user_id=make_user("other@example.com").id, plan_code="plus")
    page = staff.get("/admin/payments/payment/", {"q": "alice@example.com"}).content.decode()
    assert "alice@example.com" in page and "other@example.com" not in page
    events = staff.get("/admin/payments/paymentevent/", {"q": PaymentEvent.objects.first().event_id})
    assert events.status_code == 200 and "1 result" in events.content.decode()


def test_staff_grant_a_plan_with_a_reason(staff, user, alice):
    assert alice.get("/api/me/coins").json() == {"balance": 30}
    response = staff.post("/admin/payments/plangrant/add/", {
        "user": user.pk, "plan": Payment._meta.get_field("plan").related_model.objects.get(code="pro").pk,
        "reason": "Compensation for the outage of 27 Nov",
    })
    assert response.status_code == 302, response.content[:3000]
    grant = PlanGrant.objects.get()
    assert grant.granted_by == staff.admin and grant.reason == "Compensation for the outage of 27 Nov"
    assert grant.coins_granted == 1500
    sub = alice.get("/api/subscription").json()
    assert sub["plan"]["code"] == "pro" and sub["status"] == "active" and sub["auto_renew"] is False
    assert alice.get("/api/me/coins").json() == {"balance": 1530}
    assert staff.get(f"/admin/payments/plangrant/{grant.pk}/change/").status_code == 200
    assert staff.post(f"/admin/payments/plangrant/{grant.pk}/delete/", {"post": "yes"}).status_code == 403


def test_a_grant_without_a_reason_is_refused(staff, user):
    from subscriptions.models import Plan

    response = staff.post("/admin/payments/plangrant/add/", {
        "user": user.pk, "plan": Plan.objects.get(code="pro").pk, "reason": "   "})
    assert response.status_code == 200  # the form again, with the error
    assert not PlanGrant.objects.exists()
    assert User.objects.get(pk=user.pk).coin_balance == 30


def test_the_subscription_page_cannot_hand_out_a_plan(staff, user):
    from core.tests.test_invalidation import admin_form
    from subscriptions.models import Plan, Subscription

    url = f"/admin/subscriptions/subscription/{Subscription.objects.get(user=user).pk}/change/"
    data = admin_form(staff, url)
    data.update(plan=Plan.objects.get(code="pro").pk)
    assert staff.post(url, data).status_code == 302  # saved: only what may be edited
    assert Subscription.objects.get(user=user).plan.code == "free"


@pytest.mark.parametrize("model", ["payment", "paymentevent", "plangrant"])
def test_a_changelist_costs_the_same_queries_for_more_rows(staff, user, make_user, model):
    """Each row names its user and plan: they come with the page's query, not one query per row."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from payments.services import plan_grant
    from subscriptions.models import Plan

    def page_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert staff.get(f"/admin/payments/{model}/").status_code == 200
        return len(queries)

    def add_rows(email: str) -> None:
        other = make_user(email)
        plan_pay(user_id=other.id, plan_code="pro")
        plan_grant(user_id=other.id, plan=Plan.objects.get(code="plus"), reason="a test", granted_by_id=staff.admin.id)

    add_rows("one@example.com")
    few = page_queries()
    add_rows("two@example.com")
    add_rows("three@example.com")
    assert page_queries() == few
