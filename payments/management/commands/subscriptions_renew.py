"""By hand, what the scheduler runs every RENEWALS_EVERY seconds (payments.tasks.renewals): apply
provider events that waited for their payment, then renew, charge or expire subscriptions."""

from django.core.management.base import BaseCommand

from core.management.output import json_dumps
from payments.services import renewals_run


class Command(BaseCommand):
    help = ("Apply the payment provider's waiting events whose payment is known by now (e.g. a refund that "
            "arrived before the payment's own event); start a new period for due subscriptions: free plans at "
            "once, paid plans after a successful charge through the payment provider (a failure: past due, "
            "retried within the grace period); expire the rest whose period has ended.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args, json: bool, **options):  # noqa: A002
        result = renewals_run()
        if json:
            self.stdout.write(json_dumps(result))
            return
        self.stdout.write(f"renewed {result['renewed']}, failed {result['failed']}, expired {result['expired']}, "
                          f"waiting events applied {result['events_applied']}")
