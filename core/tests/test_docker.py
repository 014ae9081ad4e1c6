"""The Docker image and compose file: exact image tags, every Python package locked with hashes,
a web healthcheck that never depends on the database, and a stop grace longer than gunicorn's."""

import re
import subprocess
import sys
from pathlib import Path

import yaml
from django.conf import settings
from packaging.requirements import Requirement

ROOT = Path(settings.BASE_DIR)
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# major.minor.patch (PostgreSQL's releases are major.minor): never a bare major or a moving branch.
EXACT_TAG = re.compile(r"^(postgres:\d+\.\d+|[a-z0-9./-]+:\d+\.\d+\.\d+)(-[a-z0-9.]+)*$")


def pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line (extras dropped, names normalised)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        found[re.sub(r"[-_.]+", "-", req.name).lower()] = spec.version
    return found


def test_every_image_has_an_exact_version():
    images = {name: service["image"] for name, service in COMPOSE["services"].items() if "image" in service}
    assert {"redis", "db"} <= set(images)
    assert all(EXACT_TAG.match(image) for image in images.values()), images
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE).group(1)
    assert EXACT_TAG.match(base), base


def test_the_lock_covers_requirements_txt_with_the_same_versions():
    wanted, locked = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements.lock")
    assert {name: locked.get(name) for name in wanted} == wanted, "run: make lock"
    assert len(locked) > len(wanted)  # transitive dependencies are pinned too


def test_every_locked_package_has_hashes():
    text = (ROOT / "requirements.lock").read_text()
    entries = [e for e in re.split(r"\n(?=[A-Za-z0-9])", text) if "==" in e.split("\n", 1)[0]]
    assert entries
    assert all("--hash=sha256:" in entry for entry in entries), [e.split()[0] for e in entries if "--hash" not in e]


def test_the_image_installs_the_lock_and_only_with_hashes():
    assert "COPY requirements.lock ." in DOCKERFILE
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in DOCKERFILE
    assert "make lock" in (ROOT / "requirements.lock").read_text()


def graceful_timeout() -> int:
    code = "import runpy; print(runpy.run_path('config/gunicorn.conf.py')['graceful_timeout'])"
    return int(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout)


def seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return int(match.group(1))


def test_docker_waits_longer_than_gunicorns_graceful_timeout():
    web = COMPOSE["services"]["web"]
    assert seconds(web["stop_grace_period"]) > graceful_timeout()
    assert "GUNICORN_GRACEFUL_TIMEOUT" not in web["environment"]  # or the test above would need its value


def web_healthcheck(port: int) -> list[str]:
    test = COMPOSE["services"]["web"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    bind_port = COMPOSE["services"]["web"]["environment"]["GUNICORN_BIND"].rsplit(":", 1)[1]
    return [sys.executable if arg == "python" else arg.replace(f":{bind_port}/", f":{port}/") for arg in test[1:]]


def test_the_web_healthcheck_probes_liveness_only():
    command = " ".join(COMPOSE["services"]["web"]["healthcheck"]["test"])
    assert "/api/health/live" in command and "8000" in command


def test_the_web_healthcheck_fails_when_nothing_answers():
    from tests.support.harness import free_port

    assert subprocess.run(web_healthcheck(free_port()), capture_output=True).returncode != 0
