"""Print the key and TTL table from the registry, or write it into README.md: `manage.py cache_keys_table [--write] [--json]`."""

from django.conf import settings
from django.core.management.base import BaseCommand

from core.cache.ops.keytable import keys_table_markdown, replace_keys_block
from core.cache.registry import FAMILIES
from core.management.output import json_dumps


class Command(BaseCommand):
    help = "The README's key and TTL table, generated from the registry (each app's cache.py)."

    def add_arguments(self, parser):
        parser.add_argument("--write", action="store_true", help="replace the table between the keys markers in README.md")
        parser.add_argument("--json", action="store_true", help="the table as JSON, one object per family")

    def handle(self, *args, write, json, **options):  # noqa: A002
        if json:
            self.stdout.write(json_dumps([{
                "family": family.name, "key": family.template, "cluster_key": family.cluster_form,
                "holds": family.holds, "default_ttl": family.default_ttl, "ttl_setting": family.ttl_setting,
                "ttl_capped": bool(family.ttl_cap), "invalidated_by": list(family.invalidated_by),
            } for family in FAMILIES.values()]))
            return
        if not write:
            self.stdout.write(keys_table_markdown())
            return
        readme = settings.BASE_DIR / "README.md"
        text = readme.read_text()
        updated = replace_keys_block(text)
        if updated != text:
            readme.write_text(updated)
        self.stdout.write(f"README.md {'updated' if updated != text else 'already up to date'}")
