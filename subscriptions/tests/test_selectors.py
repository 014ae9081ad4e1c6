"""The access rule in its two forms (subscriptions.selectors): on a cached subscription, which a
write reads when ``subscription:user`` is warm, and on the row, which the write's statement reads
when it is cold. Both must say the same for every status and period end."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.http.formatting import iso_utc
from subscriptions.models import Subscription
from subscriptions.selectors import subscription_access_q, subscription_grants_access

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("status", list(Subscription.Status))
@pytest.mark.parametrize("ends_in", [timedelta(days=-1), timedelta(seconds=-1), timedelta(seconds=1),
                                     timedelta(days=30)])
def test_the_cached_value_and_the_row_agree(status, ends_in, user):
    now = timezone.now()
    Subscription.objects.filter(user=user).update(status=status, current_period_end=now + ends_in)
    on_the_row = Subscription.objects.filter(subscription_access_q(now), user=user).exists()
    cached = {"status": str(status), "current_period_end": iso_utc(now + ends_in)}
    assert subscription_grants_access(cached, now) == on_the_row
    assert on_the_row == (status != Subscription.Status.EXPIRED and ends_in > timedelta(0))


def test_no_subscription_grants_nothing():
    assert not subscription_grants_access({"status": "none", "current_period_end": None})
