"""Delete this app's cache keys safely: `manage.py cache_flush [family ...] [--key KEY] [--all] [--dry-run] [--yes] [--json]`."""

import io

from django.core.management.base import BaseCommand, CommandError

from core.cache.client import CACHE_ERRORS
from core.cache.ops.common import UnknownFamily, ping, resolve_families
from core.cache.ops.flush import flush, flush_key
from core.cache.registry import FAMILIES
from core.management.output import json_dumps
from core.management.progress import progress_bar


class Command(BaseCommand):
    help = ("Delete cache keys by family with SCAN + UNLINK in batches. Never KEYS, never FLUSHDB/FLUSHALL: "
            "other apps' keys in the same Redis are untouched.")

    def add_arguments(self, parser):
        parser.add_argument("families", nargs="*", metavar="family", help=f"one or more of: {', '.join(FAMILIES)}")
        parser.add_argument("--key", action="append", default=[], metavar="KEY",
                            help="delete this one key (repeatable), as redis-cli shows it without the namespace")
        parser.add_argument("--all", action="store_true", help="every family of this app (asks first)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument("--json", action="store_true", help="machine-readable output (no progress bar)")

    def handle(self, *args, families, key, all, dry_run, yes, json, **options):  # noqa: A002
        if all and families:
            raise CommandError("give family names or --all, not both")
        if not (families or key or all):
            raise CommandError(f"say what to flush: family names ({', '.join(FAMILIES)}), --key KEY or --all")
        try:
            chosen = list(FAMILIES.values()) if all else resolve_families(families)
        except UnknownFamily as exc:
            raise CommandError(str(exc)) from exc
        if all and not dry_run and not yes and not self._confirm():
            raise CommandError("aborted: nothing deleted")
        verb = "would delete" if dry_run else "deleted"
        try:
            ping()
            total, by_key = 0, {}
            for one in key:
                try:
                    family, count = flush_key(one, dry_run=dry_run)
                except UnknownFamily as exc:
                    raise CommandError(str(exc)) from exc
                by_key[one] = {"family": family.name, "count": count}
                if not json:
                    self.stdout.write(f"{family.name:<20} {verb} {count:>7}  ({one})")
                total += count
            with progress_bar(io.StringIO() if json else self.stdout, "flushing", None) as advance:
                counts = flush(chosen, dry_run=dry_run, progress=advance)
        except CACHE_ERRORS as exc:
            raise CommandError(f"Redis is unreachable: {exc}") from exc
        total += sum(counts.values())
        if json:
            self.stdout.write(json_dumps({"dry_run": dry_run, "families": counts, "keys": by_key, "total": total}))
            return
        for name, count in counts.items():
            self.stdout.write(f"{name:<20} {verb} {count:>7}")
        self.stdout.write(self.style.SUCCESS(f"{verb} {total} key(s)"))

    def _confirm(self) -> bool:
        try:
            answer = input("Delete every cache key of this app (all eight families)? [y/N] ")
        except EOFError:  # no terminal to ask on: refuse rather than guess
            return False
        return answer.strip().lower() in ("y", "yes")
