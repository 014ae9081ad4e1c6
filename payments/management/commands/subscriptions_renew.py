"""Run from cron or a scheduler (e.g. every 10 minutes): apply provider events that waited for their
payment, then renew, charge or expire subscriptions."""

from django.core.management.base import BaseCommand

from payments.services import renewals_run


class Command(BaseCommand):
    help = ("Apply the payment provider's waiting events whose payment is known by now (e.g. a refund that "
            "arrived before the payment's own event); start a new period for due subscriptions: free plans at "
            "once, paid plans after a successful charge through the payment provider (a failure: past due, "
            "retried within the grace period); expire the rest whose period has ended.")

    def handle(self, *args, **options):
        result = renewals_run()
        self.stdout.write(f"renewed {result['renewed']}, failed {result['failed']}, expired {result['expired']}, "
                          f"waiting events applied {result['events_applied']}")
