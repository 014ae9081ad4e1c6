"""`manage.py generations_fail_stale [--minutes N] [--json]`: fail and refund generations left pending."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from core.management.output import json_dumps
from generation.services import generations_fail_stale


class Command(BaseCommand):
    help = ("Generations still pending after N minutes (the worker died between the charge and the "
            "result) are marked failed and their coins and daily use given back. Run it periodically.")

    def add_arguments(self, parser):
        parser.add_argument("--minutes", type=int, default=10, help="age of a pending generation (default 10)")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args, minutes: int, json: bool, **options):  # noqa: A002
        if minutes < 1:
            raise CommandError("--minutes must be at least 1")
        count = generations_fail_stale(older_than=timedelta(minutes=minutes))
        if json:
            self.stdout.write(json_dumps({"failed_and_refunded": count, "minutes": minutes}))
            return
        self.stdout.write(self.style.SUCCESS(f"{count} stale generation(s) failed and refunded"))
