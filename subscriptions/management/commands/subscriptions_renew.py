"""Run from cron or a scheduler (e.g. every 10 minutes): renew or expire subscriptions past their end."""

from django.core.management.base import BaseCommand

from subscriptions.services import subscriptions_renew


class Command(BaseCommand):
    help = "Start a new period for subscriptions that renew; expire the others whose period has ended."

    def handle(self, *args, **options):
        result = subscriptions_renew()
        self.stdout.write(f"renewed {result['renewed']}, expired {result['expired']}")
