"""What a newcomer needs besides the code: a license, contribution notes, a changelog, and the
checks CI runs (parallel tests, migrations in step with the models)."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

ROOT = Path(settings.BASE_DIR)


def make_target(name: str) -> str:
    """The recipe of one Makefile target."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(name)}:.*\n((?:\t.*\n?)*)", text, re.MULTILINE)
    assert match, name
    return match.group(1)


def test_the_license_is_mit_with_the_contributors_copyright():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the project's contributors" in text
    assert "Permission is hereby granted, free of charge" in text


def test_contributing_and_changelog_exist_and_are_linked():
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    assert "make test" in contributing and "CHANGELOG.md" in contributing
    readme = (ROOT / "README.md").read_text()
    assert "CONTRIBUTING.md" in readme and "LICENSE" in readme


def test_make_test_runs_the_suite_in_parallel():
    recipe = make_target("test")
    assert re.search(r"pytest .*-n (auto|\d+|\$\(TEST_WORKERS\))", recipe)
    assert re.search(r"^TEST_WORKERS \?= (auto|\d+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_lint_checks_that_migrations_are_in_step_with_the_models():
    assert "makemigrations --check --dry-run" in make_target("lint")


@pytest.mark.django_db
def test_no_model_change_is_missing_its_migration():
    # SystemExit(1) when a model differs from its migrations.
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


def test_make_run_leaves_the_address_to_the_gunicorn_config_and_prints_a_usable_curl_line():
    import os
    import subprocess
    import sys

    env = {**os.environ, "GUNICORN_BIND": "127.0.0.1:9137"}
    env.pop("BIND", None)
    out = subprocess.run(["make", "-n", "run"], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    serve = next(line for line in out.splitlines() if "config/serve.py" in line and "--check" not in line)
    assert "--bind" not in serve  # GUNICORN_BIND (environment or .env) decides
    # config/serve.py runs gunicorn there and prints the curl line (core/tests/test_make_run.py runs it).
    probe = ("import runpy; serve = runpy.run_path('config/serve.py'); bind = serve['configured_bind'](); "
             "print(bind); print(serve['curl_line']('http://' + bind))")
    bind, curl = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                                check=True).stdout.splitlines()
    assert bind == "127.0.0.1:9137" and "http://127.0.0.1:9137/api/characters" in curl
    python = re.search(r"\| (\S+) -c ", curl).group(1)
    assert Path(python).is_absolute(), python  # works from any directory
    out = subprocess.run(["make", "-n", "run", "BIND=127.0.0.1:9138"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "config/serve.py --bind 127.0.0.1:9138" in out


def test_the_readme_says_how_to_get_an_admin_and_that_a_postgresql_database_must_exist():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):readme.index("## What it is")]
    assert "manage.py createsuperuser --email" in quick_start
    assert "CREATE DATABASE" in quick_start and "createdb" in quick_start


def test_the_quick_start_names_another_address_and_what_sqlite_does_not_guarantee():
    readme = (ROOT / "README.md").read_text()
    quick_start = " ".join(readme[readme.index("## Quick start"):readme.index("## What it is")].split())
    assert "make run BIND=127.0.0.1:8001" in quick_start and "8000 is also where `docker compose`" in quick_start
    assert "without `DATABASE_URL` the database is `var/db.sqlite3`" in quick_start
    assert "proved on PostgreSQL only" in quick_start and "core/tests/test_races.py" in quick_start


@pytest.mark.django_db
def test_the_documented_createsuperuser_gives_an_admin_who_can_log_in(client, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "admin-password-123")
    call_command("createsuperuser", "--email", "admin@example.com", "--noinput", stdout=StringIO())
    response = client.post("/admin/login/?next=/admin/", {"username": "admin@example.com",
                                                          "password": "admin-password-123"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_make_lint_type_checks_the_cache_layer_with_django_stubs():
    import tomllib

    assert re.search(r"^\t\$\(VENV\)/bin/mypy\b", make_target("lint"), re.MULTILINE)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert "core/cache" in config["files"] and "mypy_django_plugin.main" in config["plugins"]
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^mypy==[\d.]+$", dev, re.MULTILINE) and re.search(r"^django-stubs==[\d.]+$", dev, re.MULTILINE)


def test_make_run_collects_static_files_only_when_something_they_come_from_changed(tmp_path):
    import os
    import shutil
    import subprocess

    # The Makefile in a checkout of its own: an installed virtualenv, settings, an app's static file.
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "config" / "settings").mkdir(parents=True)
    (tmp_path / "config" / "settings" / "base.py").write_text("")
    (tmp_path / "core" / "static").mkdir(parents=True)
    (tmp_path / "core" / "static" / "favicon.ico").write_bytes(b"")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").write_text("")
    clock = iter(range(1_700_000_000, 1_800_000_000, 10))

    def touch(*paths: str) -> None:
        for path in paths:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).touch()
            now = next(clock)
            os.utime(tmp_path / path, (now, now))

    def collects() -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "BIND"))}
        out = subprocess.run(["make", "-n", "run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             check=True).stdout
        return "manage.py collectstatic" in out

    touch("requirements.txt", "requirements-dev.txt", "config/settings/base.py", "core/static/favicon.ico",
          ".venv/.installed")
    assert collects()  # the first run
    touch("staticfiles/.collected")
    assert not collects()  # a restart with nothing changed
    for changed in ("core/static/favicon.ico", "config/settings/base.py", ".venv/.installed",
                    "chat/static/chat/new.css"):
        touch(changed)
        assert collects(), changed
        touch("staticfiles/.collected")
        assert not collects(), changed


def test_ci_runs_the_quick_start_on_a_fresh_copy_with_no_configuration_before_the_suite():
    import subprocess

    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index(".ci/smoke") < ci.index("make test")
    smoke = (ROOT / ".ci" / "smoke").read_text()
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "smoke")], check=True)
    # Tracked files only (no .env, var/ or virtualenv), an empty environment (no DATABASE_URL: SQLite).
    assert "git ls-files" in smoke and 'env -i "${environment[@]}" make run BIND=' in smoke
    assert re.search(r"^environment=\(PATH=\"\$PATH\" HOME=\"\$HOME\" LANG=C.UTF-8 TERM=dumb\)$", smoke, re.MULTILINE)
    # It waits for the health check, then runs the curl line make run printed.
    assert '"$base/api/health"' in smoke and "grep -A1 '^Ready. Try:'" in smoke and 'bash -c "$line"' in smoke
