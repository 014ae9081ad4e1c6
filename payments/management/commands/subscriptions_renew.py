"""Run from cron or a scheduler (e.g. every 10 minutes): renew, charge or expire subscriptions."""

from django.core.management.base import BaseCommand

from payments.services import renewals_run


class Command(BaseCommand):
    help = ("Start a new period for due subscriptions: free plans at once, paid plans after a successful "
            "charge through the payment provider (a failure: past due, retried within the grace period); "
            "expire the rest whose period has ended.")

    def handle(self, *args, **options):
        result = renewals_run()
        self.stdout.write(f"renewed {result['renewed']}, failed {result['failed']}, expired {result['expired']}")
