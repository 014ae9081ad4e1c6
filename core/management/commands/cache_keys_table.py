"""Print the key and TTL table from the registry, or write it into README.md: `manage.py cache_keys_table [--write]`."""

from django.conf import settings
from django.core.management.base import BaseCommand

from core.cache.ops.keytable import keys_table_markdown, replace_keys_block


class Command(BaseCommand):
    help = "The README's key and TTL table, generated from the registry (each app's cache.py)."

    def add_arguments(self, parser):
        parser.add_argument("--write", action="store_true", help="replace the table between the keys markers in README.md")

    def handle(self, *args, write, **options):
        if not write:
            self.stdout.write(keys_table_markdown())
            return
        readme = settings.BASE_DIR / "README.md"
        text = readme.read_text()
        updated = replace_keys_block(text)
        if updated != text:
            readme.write_text(updated)
        self.stdout.write(f"README.md {'updated' if updated != text else 'already up to date'}")
