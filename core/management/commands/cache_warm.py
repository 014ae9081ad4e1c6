"""Fill the cache ahead of traffic: `manage.py cache_warm [family ...] [--users-active-since DAYS] [--json]`."""

import io

from django.core.management.base import BaseCommand, CommandError

from core.cache.client import CACHE_ERRORS
from core.cache.ops.common import UnknownFamily, resolve_families
from core.cache.ops.warm import warm, warm_targets
from core.cache.registry import FAMILIES, shared_families, user_families
from core.management.output import json_dumps
from core.management.progress import progress_bar


class Command(BaseCommand):
    @property
    def help(self) -> str:  # the families are the apps' (registered at ready()), not core's
        shared = ", ".join(FAMILIES[name].template for name in shared_families())
        return (f"Fill the shared families ({shared}) through the normal read-through path; with "
                "--users-active-since also the per-user families of recently active users. Keys already "
                "cached are left alone, so running it twice writes nothing the second time.")

    def add_arguments(self, parser):
        parser.add_argument("families", nargs="*", metavar="family",
                            help=f"families to warm (default: {', '.join(shared_families())}, plus the "
                                 f"per-user ones with --users-active-since)")
        parser.add_argument("--users-active-since", type=int, metavar="DAYS",
                            help="also warm per-user keys of users active in the last DAYS days")
        parser.add_argument("--json", action="store_true", help="machine-readable output (no progress bar)")

    def handle(self, *args, families, users_active_since, json, **options):  # noqa: A002
        if users_active_since is not None and users_active_since < 0:
            raise CommandError("--users-active-since must be 0 or more days")
        if not families:
            families = list(shared_families())
            if users_active_since is not None:
                families += list(user_families())
        try:
            chosen = resolve_families(families)
        except UnknownFamily as exc:
            raise CommandError(str(exc)) from exc
        per_user = [f.name for f in chosen if not f.shared]
        if per_user and users_active_since is None:
            raise CommandError(f"{', '.join(per_user)} {'is' if len(per_user) == 1 else 'are'} per user: "
                               "say whose with --users-active-since DAYS")
        targets = warm_targets(chosen, users_active_since=users_active_since)
        try:
            with progress_bar(io.StringIO() if json else self.stdout, "warming", len(targets)) as advance:
                result = warm(targets, progress=advance)
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
            name = family.name
            line = f"{name:<20} written {result.written.get(name, 0):>6}  already cached {result.already.get(name, 0):>6}"
            if result.skipped.get(name):
                line += f"  no such row {result.skipped[name]}"
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS(
            f"{result.total_written} key(s) written, {sum(result.already.values())} already cached, "
            f"in {result.seconds:.2f} s"
        ))
