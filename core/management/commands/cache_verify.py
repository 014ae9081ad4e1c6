"""Compare every cached value with the database: `manage.py cache_verify [family ...] [--fix] [--json]`."""

import io

from django.core.management.base import BaseCommand, CommandError

from core.cache.client import CACHE_ERRORS
from core.cache.ops.common import UnknownFamily, ping, resolve_families
from core.cache.ops.verify import verify
from core.management.output import json_dumps
from core.management.progress import progress_bar


class Command(BaseCommand):
    help = ("Recompute each cached value from the database with its family's reader and report keys whose data "
            "differs. --fix deletes them (the next read re-caches). Exits 1 when drift is left (found without --fix).")

    def add_arguments(self, parser):
        parser.add_argument("families", nargs="*", metavar="family", help="only these families (default: all)")
        parser.add_argument("--fix", action="store_true", help="delete drifted keys")
        parser.add_argument("--json", action="store_true",
                            help="machine-readable output (no progress bar); the exit status is the same")

    def handle(self, *args, families, fix, json, **options):  # noqa: A002
        try:
            chosen = resolve_families(families) if families else None
        except UnknownFamily as exc:
            raise CommandError(str(exc)) from exc
        try:
            ping()
            with progress_bar(io.StringIO() if json else self.stdout, "verifying", None) as advance:
                result = verify(chosen, fix=fix, progress=advance)
        except CACHE_ERRORS as exc:
            raise CommandError(f"Redis is unreachable: {exc}") from exc
        if json:
            self.stdout.write(json_dumps({
                "checked": result.checked, "unverifiable": result.unverifiable,
                "drifted": [{"key": d.key, "family": d.family, "reason": d.reason} for d in result.drifted],
                "fixed": result.fixed if fix else None, "seconds": round(result.seconds, 3)}))
            if result.drifted and not fix:
                raise CommandError(f"{len(result.drifted)} drifted key(s); run with --fix", returncode=1)
            return
        for drift in result.drifted:
            self.stdout.write(f"DRIFT {drift.key} ({drift.reason})")
        for name, count in result.checked.items():
            line = f"{name:<20} checked {count:>7}"
            if result.unverifiable.get(name):
                line += f"  unverifiable {result.unverifiable[name]} (hashed key part)"
            self.stdout.write(line)
        summary = (f"{sum(result.checked.values())} key(s) checked, {len(result.drifted)} drifted"
                   + (f", {result.fixed} deleted" if fix else "") + f", in {result.seconds:.2f} s")
        if result.drifted and not fix:
            self.stdout.write(self.style.ERROR(summary))
            raise CommandError(f"{len(result.drifted)} drifted key(s); run with --fix", returncode=1)
        # With --fix nothing drifted is left: each such key was deleted, or a write replaced it meanwhile.
        self.stdout.write(self.style.WARNING(summary) if result.drifted else self.style.SUCCESS(summary))
