"""Fill the cache ahead of traffic: `manage.py cache_warm [family ...] [--users-active-since DAYS]
[--shared-only] [--rate KEYS_PER_S] [--json]`."""

import io

from django.core.management.base import BaseCommand, CommandError

from core.cache.client import CACHE_ERRORS
from core.cache.ops.common import UnknownFamily, resolve_families
from core.cache.ops.warm import DEFAULT_RATE, warm, warm_targets
from core.cache.registry import FAMILIES, shared_families
from core.management.output import json_dumps
from core.management.progress import progress_bar


class Command(BaseCommand):
    @property
    def help(self) -> str:  # the families are the apps' (registered at ready()), not core's
        shared = ", ".join(FAMILIES[name].template for name in shared_families())
        return (f"Fill the shared families ({shared}) and the per-user keys of the users active within each "
                "family's TTL (the keys a flush or restart took and their next requests read) through the "
                "normal read-through path, at most --rate keys per second. Keys already cached are left "
                "alone, so running it twice writes nothing the second time.")

    def add_arguments(self, parser):
        parser.add_argument("families", nargs="*", metavar="family",
                            help=f"families to warm (default: all of {', '.join(FAMILIES)})")
        parser.add_argument("--users-active-since", type=int, metavar="DAYS",
                            help="per-user keys of everyone active in the last DAYS days instead of within each "
                                 "family's TTL (keys of users who do not come back within the TTL expire unread)")
        parser.add_argument("--shared-only", action="store_true", help="only the shared families")
        parser.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="KEYS_PER_S",
                            help=f"keys per second at most (default {DEFAULT_RATE}; 0: no limit)")
        parser.add_argument("--json", action="store_true", help="machine-readable output (no progress bar)")

    def handle(self, *args, families, users_active_since, shared_only, rate, json, **options):  # noqa: A002
        if users_active_since is not None and users_active_since < 0:
            raise CommandError("--users-active-since must be 0 or more days")
        if rate < 0:
            raise CommandError("--rate must be 0 (no limit) or more keys per second")
        try:
            chosen = resolve_families(families or FAMILIES)
        except UnknownFamily as exc:
            raise CommandError(str(exc)) from exc
        per_user = [f.name for f in chosen if not f.shared]
        if shared_only and families and per_user:
            raise CommandError(f"{', '.join(per_user)} {'is' if len(per_user) == 1 else 'are'} per user, "
                               "not shared: drop --shared-only or the family")
        targets = warm_targets(chosen, users_active_since=users_active_since, per_user=not shared_only)
        try:
            with progress_bar(io.StringIO() if json else self.stdout, "warming", len(targets)) as advance:
                result = warm(targets, rate=rate, progress=advance)
        except CACHE_ERRORS as exc:
            raise CommandError(f"Redis is unreachable: {exc}") from exc
        if json:
            self.stdout.write(json_dumps({
                "families": {f.name: {"written": result.written.get(f.name, 0), "already_cached": result.already.get(f.name, 0),
                                      "no_such_row": result.skipped.get(f.name, 0)} for f in chosen},
                "written": result.total_written, "already_cached": sum(result.already.values()),
                "seconds": round(result.seconds, 3)}))
            return
        for family in chosen:
            if shared_only and not family.shared:
                continue
            name = family.name
            line = f"{name:<20} written {result.written.get(name, 0):>6}  already cached {result.already.get(name, 0):>6}"
            if result.skipped.get(name):
                line += f"  no such row {result.skipped[name]}"
            self.stdout.write(line)
        pace = f", at most {rate:g} keys/s" if rate else ""
        self.stdout.write(self.style.SUCCESS(
            f"{result.total_written} key(s) written, {sum(result.already.values())} already cached, "
            f"in {result.seconds:.2f} s{pace}"
        ))
