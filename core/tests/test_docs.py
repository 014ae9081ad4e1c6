"""The README and .env.example follow the code: the key table is the registry's, and every
environment variable the settings read is documented."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from core.cache.ops import keytable as keytable_ops
from core.cache.registry import FAMILIES

ROOT = Path(settings.BASE_DIR)
README = (ROOT / "README.md").read_text()


def read_env_names() -> set[str]:
    """Every variable read by config/settings/*.py and config/gunicorn.conf.py, and the families' TTL overrides."""
    names: set[str] = set()
    for path in [*(ROOT / "config" / "settings").glob("*.py"), ROOT / "config" / "gunicorn.conf.py"]:
        text = path.read_text()
        names.update(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", text))
        names.update(re.findall(r"environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\"", text))
    # CACHE_TTL_<FAMILY>: read by prefix (base.py), named by each family beside its default.
    names.update(family.ttl_setting for family in FAMILIES.values())
    return names


def test_readme_key_table_is_the_registrys():
    block = README[README.index(keytable_ops.KEYS_START) + len(keytable_ops.KEYS_START):README.index(keytable_ops.KEYS_END)]
    assert block.strip() == keytable_ops.keys_table_markdown(), "run: python manage.py cache_keys_table --write"


def test_the_generated_table_has_every_family_and_ttl():
    table = keytable_ops.keys_table_markdown()
    for family in FAMILIES.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{family.template}` |"))
        assert f"| {family.default_ttl} s" in row and family.ttl_setting in row


def test_keys_table_command_rewrites_only_the_block(tmp_path, settings):
    (tmp_path / "README.md").write_text("intro\n<!-- keys:start -->\nold table\n<!-- keys:end -->\n<!-- bench:start -->x\n")
    settings.BASE_DIR = tmp_path
    call_command("cache_keys_table", "--write", stdout=StringIO())
    text = (tmp_path / "README.md").read_text()
    assert "old table" not in text
    assert text.startswith("intro\n<!-- keys:start -->\n| key in Redis |")
    assert text.endswith("<!-- keys:end -->\n<!-- bench:start -->x\n")


def test_the_settings_read_the_variables_we_think():
    names = read_env_names()
    assert {"REDIS_URL", "SECRET_KEY", "CACHE_TTL_USER_COINS", "GUNICORN_BIND", "PROMETHEUS_MULTIPROC_DIR"} <= names


@pytest.mark.parametrize("name", sorted(read_env_names()))
def test_every_variable_is_in_the_readme_configuration_table(name):
    table = README[README.index("## Configuration"):README.index("## Commands")]
    assert f"| `{name}` |" in table


@pytest.mark.parametrize("name", sorted(read_env_names()))
def test_every_variable_is_in_env_example(name):
    assert re.search(rf"^(# )?{name}=", (ROOT / ".env.example").read_text(), re.MULTILINE)


def test_quick_start_and_bench_markers_are_kept():
    assert "make run    # " in README and "make test   # " in README
    assert README.count("<!-- bench:start -->") == 1 and README.count("<!-- bench:end -->") == 1


def test_operations_guides_exist_in_both_languages():
    for name in ("operations.en.md", "operations.ru.md"):
        text = (ROOT / "docs" / name).read_text()
        for command in ("cache_flush", "cache_stats", "cache_warm", "cache_verify", "BGSAVE", "art_generation_redis"):
            assert command in text, (name, command)
