"""`manage.py generations_fail_stale [--minutes N]`: fail and refund generations left pending."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from generation.services import generations_fail_stale


class Command(BaseCommand):
    help = ("Generations still pending after N minutes (the worker died between the charge and the "
            "result) are marked failed and their coins and daily use given back. Run it periodically.")

    def add_arguments(self, parser):
        parser.add_argument("--minutes", type=int, default=10, help="age of a pending generation (default 10)")

    def handle(self, *args, minutes: int, **options):
        if minutes < 1:
            raise CommandError("--minutes must be at least 1")
        count = generations_fail_stale(older_than=timedelta(minutes=minutes))
        self.stdout.write(self.style.SUCCESS(f"{count} stale generation(s) failed and refunded"))
