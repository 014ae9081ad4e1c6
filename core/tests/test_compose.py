"""docker-compose.yml cannot be run here (no Docker), so check what can be checked: it is a valid
Compose file, it says what the operations guide promises, and its exact Redis command is accepted
by a real redis-server, which reports every option back."""

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import jsonschema
import pytest
import redis
import yaml
from django.conf import settings

from tests.support.harness import LoopbackHttpServer, free_port

ROOT = Path(settings.BASE_DIR)
# The Compose Specification schema as shipped in the docker-compose 1.29.2 package (Apache-2.0),
# vendored because tests have no internet.
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_against_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    jsonschema.validate(compose, schema, cls=jsonschema.Draft201909Validator)


def test_the_schema_check_catches_mistakes(compose):
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["web"]["depends_on"]["redis"]["condition"] = "service_ready"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft201909Validator)
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["tests"] = ["CMD", "true"]  # a typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft201909Validator)


def test_redis_service_is_what_the_guide_describes(compose):
    service = compose["services"]["redis"]
    assert service["image"].startswith("redis:7.")
    assert service["container_name"] == "art_generation_redis"
    assert "redis_data:/data" in service["volumes"]
    assert "redis_data" in compose["volumes"]
    assert service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # Bound to loopback only: never published on every interface.
    assert service["ports"] == ["127.0.0.1:6379:6379"]
    assert all(str(port).startswith("127.0.0.1:") for s in compose["services"].values() for port in s.get("ports", []))


def test_db_and_web_services(compose):
    db, web = compose["services"]["db"], compose["services"]["web"]
    assert db["image"].startswith("postgres:16")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"])
    assert "pg_isready" in db["healthcheck"]["test"]
    assert web["build"] == "."
    env = web["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in env["DATABASE_URL"]
    # No published secret: an unset SECRET_KEY is generated once into the app_secrets volume.
    assert env["SECRET_KEY"] == "${SECRET_KEY:-}"
    assert env["GENERATED_SECRETS_FILE"].startswith("/app/var/secrets/")
    assert "app_secrets:/app/var/secrets" in web["volumes"] and "app_secrets" in compose["volumes"]
    assert env["GUNICORN_BIND"] == "0.0.0.0:8000"
    assert web["depends_on"] == {"redis": {"condition": "service_healthy"}, "db": {"condition": "service_healthy"}}


def test_job_worker_and_scheduler_run_with_the_apps_settings_and_healthchecks(compose):
    web, worker, beat = (compose["services"][name] for name in ("web", "worker", "beat"))
    for service in (worker, beat):
        assert service["build"] == "."
        for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"):
            assert service["environment"][name] == web["environment"][name], name
        assert service["depends_on"] == {"web": {"condition": "service_healthy"}}  # migrated first
        assert service["healthcheck"]["test"][0] == "CMD-SHELL"
    assert worker["command"][:4] == ["celery", "-A", "config", "worker"]
    assert worker["command"][worker["command"].index("-Q") + 1] == "generations,chat,default"
    assert "inspect ping" in worker["healthcheck"]["test"][1]
    # Its jobs' metrics on a port of its own (the web's /metrics is in another container).
    assert _default(worker["environment"]["JOB_METRICS_PORT"]) == "9101"
    assert worker["environment"]["JOB_METRICS_ADDR"] == "0.0.0.0" and "ports" not in worker
    assert beat["command"][:4] == ["celery", "-A", "config", "beat"]
    assert "celerybeat-schedule" in beat["healthcheck"]["test"][1]
    assert beat["environment"]["CELERY_BEAT_SCHEDULE_FILENAME"].startswith("/tmp/")
    assert "deploy" not in beat or beat["deploy"].get("replicas", 1) == 1  # one scheduler


def _default(value: str) -> str:
    """The default of a compose ``${VAR:-default}`` value."""
    assert value.startswith("${") and ":-" in value, value
    return value[value.index(":-") + 2:-1]


def test_nginx_service_fronts_the_app_with_the_repo_template(compose):
    import re

    nginx, web = compose["services"]["nginx"], compose["services"]["web"]
    assert nginx["image"].startswith("nginx:")
    assert "./deploy/nginx/chatart.conf.template:/etc/nginx/templates/default.conf.template:ro" in nginx["volumes"]
    env = nginx["environment"]
    template = (ROOT / "deploy" / "nginx" / "chatart.conf.template").read_text()
    # Every variable of the template is set, and only those are substituted ($host etc. stay nginx's).
    assert set(re.findall(r"\$\{(NGINX_[A-Z_]+)\}", template)) == {k for k in env if k != "NGINX_ENVSUBST_FILTER"}
    assert env["NGINX_ENVSUBST_FILTER"] == "^NGINX_"
    assert env["NGINX_UPSTREAM"] == "web:" + web["environment"]["GUNICORN_BIND"].rsplit(":", 1)[1]
    # Only nginx is published (on the address the app had); gunicorn is reachable inside the network only.
    assert nginx["ports"] == ["127.0.0.1:8000:80"] and env["NGINX_LISTEN"] == "80"
    assert "ports" not in web
    assert nginx["depends_on"] == {"web": {"condition": "service_healthy"}}


def test_the_app_trusts_exactly_the_nginx_hop_and_shares_its_body_limit(compose):
    web_env, nginx_env = compose["services"]["web"]["environment"], compose["services"]["nginx"]["environment"]
    assert _default(web_env["TRUSTED_PROXY_COUNT"]) == "1"
    # One variable feeds both limits; its default is the app's own.
    assert web_env["DATA_UPLOAD_MAX_MEMORY_SIZE"] == nginx_env["NGINX_CLIENT_MAX_BODY_SIZE"]
    assert _default(web_env["DATA_UPLOAD_MAX_MEMORY_SIZE"]) == str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def test_dockerfile_runs_migrations_then_gunicorn_with_the_repo_config():
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    assert cmd.index("manage.py migrate") < cmd.index("exec gunicorn")
    assert "-c config/gunicorn.conf.py" in cmd
    assert "COPY requirements.lock" in dockerfile and "--require-hashes -r requirements.lock" in dockerfile
    assert "USER app" in dockerfile


def _resolved(value, environment: dict[str, str]) -> str:
    """A compose value as `docker compose` interpolates it: ${VAR:-default}, ${VAR:?error}, ${VAR}."""
    import re

    def one(match: re.Match) -> str:
        name, operator, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        given = environment.get(name, "")
        if operator == ":?" and not given:
            raise AssertionError(f"compose refuses to start without {name}: {rest}")
        return given or (rest if operator == ":-" else "")

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(:-|:\?)?([^}]*)\}", one, str(value))


def _web_environment(compose: dict, given: dict[str, str], secrets_file: Path) -> dict[str, str]:
    """The web container's environment on a machine with only `given` in .env (nothing: a fresh one)."""
    env = {name: _resolved(value, given) for name, value in compose["services"]["web"]["environment"].items()}
    # The volume and gunicorn's metrics directory, here in a temporary directory.
    env["GENERATED_SECRETS_FILE"] = str(secrets_file)
    (secrets_file.parent / "prometheus").mkdir(exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(secrets_file.parent / "prometheus")
    return env


def _check_as_the_web_container(environment: dict[str, str]) -> subprocess.CompletedProcess:
    import os
    import sys

    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    code = ("import django, json; django.setup(); from django.conf import settings; "
            "from django.core.management import call_command; call_command('check'); "
            "print(json.dumps({'provider': settings.PAYMENT_PROVIDER, 'secret_key': settings.SECRET_KEY, "
            "'offline_secret': settings.PAYMENT_OFFLINE_WEBHOOK_SECRET}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**keep, **environment},
                          capture_output=True, text=True, timeout=60)


def test_a_fresh_machine_starts_without_editing_files_and_takes_no_real_money(compose, tmp_path):
    """No .env at all: the production settings load and pass their system checks (payments.E002/E003
    stopped migrate before), with the offline provider and secrets generated once, not published."""
    secrets_file = tmp_path / "generated.env"
    first = _check_as_the_web_container(_web_environment(compose, {}, secrets_file))
    assert first.returncode == 0, first.stderr
    settings_seen = json.loads(first.stdout.strip().splitlines()[-1])
    assert settings_seen["provider"] == "offline"
    assert len(settings_seen["secret_key"]) >= 50
    assert settings_seen["offline_secret"] != "whsec_offline_development_only"
    assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"
    # Every later process (gunicorn's workers, `docker compose exec web python manage.py ...`)
    # reads the same secrets: sessions and tokens survive a restart.
    again = json.loads(_check_as_the_web_container(_web_environment(compose, {}, secrets_file)).stdout.splitlines()[-1])
    assert again == settings_seen
    # A SECRET_KEY given in .env wins over the generated one.
    given = json.loads(_check_as_the_web_container(
        _web_environment(compose, {"SECRET_KEY": "k" * 60}, secrets_file)).stdout.splitlines()[-1])
    assert given["secret_key"] == "k" * 60 and given["offline_secret"] == settings_seen["offline_secret"]


def test_every_app_container_reads_the_same_generated_secrets(compose):
    """The job worker and the scheduler take web's settings: without the volume each would generate a
    SECRET_KEY and offline webhook secret of its own, unlike web's."""
    users = {name: service for name, service in compose["services"].items()
             if "GENERATED_SECRETS_FILE" in service.get("environment", {})}
    assert set(users) == {"web", "worker", "beat"}
    for name, service in users.items():
        directory = service["environment"]["GENERATED_SECRETS_FILE"].rsplit("/", 1)[0]
        assert f"app_secrets:{directory}" in service.get("volumes", []), name


def test_choosing_stripe_in_env_still_needs_its_keys(compose, tmp_path):
    result = _check_as_the_web_container(
        _web_environment(compose, {"PAYMENT_PROVIDER": "stripe"}, tmp_path / "generated.env"))
    assert result.returncode != 0 and "payments.E002" in result.stderr


class _Upstream(LoopbackHttpServer):
    """A stand-in for gunicorn behind nginx: answers /api/health/live with a chosen status."""

    def __init__(self, status: int) -> None:
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(status if self.path == "/api/health/live" else 404)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(Handler)


@pytest.mark.parametrize("status, healthy", [(200, True), (502, False), (None, False)])
def test_the_nginx_healthcheck_passes_only_when_the_app_answers_through_it(compose, status, healthy):
    test = compose["services"]["nginx"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"] and "/dev/tcp/127.0.0.1/80 " in test[3]
    upstream = _Upstream(status or 200)
    port = upstream.port
    if status is None:  # nothing listens
        upstream.close()
    try:
        result = subprocess.run(["bash", "-c", test[3].replace("/dev/tcp/127.0.0.1/80 ", f"/dev/tcp/127.0.0.1/{port} ")],
                                capture_output=True, timeout=10)
    finally:
        if status is not None:
            upstream.close()
    assert (result.returncode == 0) is healthy


def test_backup_steps_use_a_tagged_busybox():
    import re

    for guide in ("operations.en.md", "operations.ru.md"):
        text = (ROOT / "docs" / guide).read_text()
        images = re.findall(r"\bbusybox(\S*)", text)
        assert images and all(re.fullmatch(r":\d+\.\d+\.\d+", tag) for tag in images), (guide, images)


class ComposeRedis:
    """redis-server started with the compose file's exact command, plus only what a container
    gives it implicitly (port, loopback, its data directory)."""

    def __init__(self, command: list[str], *extra: str) -> None:
        assert command[0] == "redis-server"
        self.dir = tempfile.mkdtemp(prefix="compose-redis-")
        self.port = free_port()
        args = [shutil.which("redis-server"), *command[1:], *extra,
                "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--daemonize", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait(self, **client_kwargs) -> redis.Redis:
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server rejected the command: {self.process.stdout.read().decode()}")
            try:
                client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, **client_kwargs)
                client.ping()
                return client
            except redis.AuthenticationError:
                raise
            except redis.ConnectionError:
                time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def close(self) -> None:
        self.process.kill()  # our own child, by its handle
        self.process.wait(timeout=10)
        self.process.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_the_exact_redis_command_runs_and_reports_every_option(compose):
    command = compose["services"]["redis"]["command"]
    assert isinstance(command, list) and all(isinstance(arg, str) for arg in command), command  # yes/no quoted
    server = ComposeRedis(command)
    try:
        client = server.wait()
        config = {name: client.config_get(name)[name] for name in (
            "appendonly", "maxmemory", "maxmemory-policy", "save", "stop-writes-on-bgsave-error",
            "min-replicas-to-write", "min-replicas-max-lag")}
        # The AOF is really on: the server writes it into its data directory.
        assert client.info("persistence")["aof_enabled"] == 1
    finally:
        server.close()
    assert config == {
        "appendonly": "yes",
        "maxmemory": str(1512 * 1024 * 1024),
        "maxmemory-policy": "allkeys-lru",
        "save": "900 1 300 10 60 10000",
        "stop-writes-on-bgsave-error": "no",
        "min-replicas-to-write": "0",
        "min-replicas-max-lag": "10",
    }


@pytest.mark.slow
def test_requirepass_as_documented_with_a_password_in_redis_url(compose):
    server = ComposeRedis(compose["services"]["redis"]["command"], "--requirepass", "s3cret-pass")
    try:
        server.wait(password="s3cret-pass")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port).ping()
        url = redis.Redis.from_url(f"redis://:s3cret-pass@127.0.0.1:{server.port}/0")
        assert url.ping()
        url.close()
    finally:
        server.close()


def _acl_file(*extra_lines: str) -> Path:
    """The example as an operator uses it: copied, its password set, nothing else changed (and
    ``extra_lines`` appended, e.g. an administrator of the test's own)."""
    path = Path(tempfile.mkdtemp(prefix="acl-")) / "users.acl"
    shutil.copy(ROOT / "deploy" / "redis" / "users.acl.example", path)
    acl = path.read_text()
    assert acl.count(">CHANGE-ME") == 1
    path.write_text(acl.replace(">CHANGE-ME", ">acl-pass-1") + "".join(f"{line}\n" for line in extra_lines))
    return path


def test_the_acl_example_copied_with_its_password_set_starts_redis(compose):
    server = ComposeRedis(compose["services"]["redis"]["command"], "--aclfile", str(_acl_file()))
    try:
        with pytest.raises(redis.AuthenticationError):
            server.wait()  # the default user is off
        app = server.wait(username="chatart", password="acl-pass-1")
        assert app.set("acl-start", "1") and app.get("acl-start") == b"1"
    finally:
        server.close()


def test_the_acl_steps_of_the_redis_readme_run_verbatim_and_start_redis(compose):
    # The shell lines an operator pastes from deploy/redis/README.md, run as they are in a copy of
    # the tree, leave a file this redis-server starts with; the password is the one sed wrote.
    readme = (ROOT / "deploy" / "redis" / "README.md").read_text()
    steps = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    assert "users.acl.example" in steps and "CHANGE-ME" in steps, steps
    tree = Path(tempfile.mkdtemp(prefix="acl-steps-"))
    (tree / "deploy" / "redis").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "redis" / "users.acl.example", tree / "deploy" / "redis")
    subprocess.run(["bash", "-euo", "pipefail", "-c", steps], cwd=tree, check=True, timeout=30)
    acl = (tree / "deploy" / "redis" / "users.acl").read_text()
    password = re.fullmatch(r"(?s).*\buser chatart on >([0-9a-f]{64}) .*", acl).group(1)
    server = ComposeRedis(compose["services"]["redis"]["command"], "--aclfile", str(tree / "deploy" / "redis" / "users.acl"))
    try:
        app = server.wait(username="chatart", password=password)
        assert app.set("acl-steps", "1") and app.get("acl-steps") == b"1"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, username="chatart", password="CHANGE-ME").ping()
    finally:
        server.close()
        shutil.rmtree(tree, ignore_errors=True)


# Refused to the app's user: what an audit of the ACL found allowed, and more of the same kind.
FORBIDDEN = [
    ("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("SWAPDB", "0", "1"), ("MOVE", "character:luna", "1"),
    ("RENAME", "character:luna", "x"), ("RENAMENX", "character:luna", "x"), ("COPY", "character:luna", "x"),
    ("SCRIPT", "FLUSH"), ("FUNCTION", "FLUSH"), ("CLIENT", "KILL", "ID", "999999"), ("CLIENT", "LIST"),
    ("CONFIG", "GET", "requirepass"), ("CONFIG", "SET", "maxmemory", "1"),
    ("SHUTDOWN", "NOSAVE"), ("SAVE",), ("BGSAVE",), ("BGREWRITEAOF",), ("REPLICAOF", "NO", "ONE"),
    ("ACL", "LIST"), ("DUMP", "character:luna"), ("RESTORE", "x", "0", "junk"), ("OBJECT", "ENCODING", "x"),
    ("RANDOMKEY",), ("SORT", "x"), ("MIGRATE", "127.0.0.1", "1", "x", "0", "10"), ("PUBLISH", "c", "m"),
    ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() return 1 end)"),
]


# Refusals the app expects and copes with: redis-py's CLIENT SETINFO on connect (ignored) and
# cache_stats' CONFIG GET (reported as unknown).
TOLERATED = {"client|setinfo", "config|get"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # cached reads are not trusted inside an atomic block
def test_the_documented_acl_user_can_run_every_cache_command_and_nothing_dangerous(compose, monkeypatch):
    import copy

    from django.core.cache import caches
    from django.test import override_settings

    from characters.models import Character
    from core.cache import api, replication
    from core.cache.client import redis_client
    from core.cache.health import HEALTH
    from core.cache.ops import flush as flush_ops
    from core.cache.ops import stats as stats_ops
    from core.cache.ops import verify as verify_ops
    from core.cache.ops import warm as warm_ops
    from core.cache.registry import FAMILIES

    # An administrator besides the app's user, only to ask the server what chatart may do and did.
    acl_path = _acl_file("user admin on >admin-pass-1 ~* &* +@all")
    server = ComposeRedis(compose["services"]["redis"]["command"], "--aclfile", str(acl_path))
    try:
        with pytest.raises(redis.AuthenticationError):
            server.wait()  # the default user is off
        admin = redis.Redis.from_url(f"redis://admin:admin-pass-1@127.0.0.1:{server.port}/0", decode_responses=True)
        admin.acl_log_reset()
        url = f"redis://chatart:acl-pass-1@127.0.0.1:{server.port}/0"
        # The app as configured (django-redis, the guarded connection class, the same pool for the
        # cache layer and caches["default"]), on this server as chatart, errors not swallowed.
        configured = copy.deepcopy(settings.CACHES)
        configured["default"]["LOCATION"] = url
        configured["default"]["OPTIONS"]["IGNORE_EXCEPTIONS"] = False
        with override_settings(CACHES=configured):
            HEALTH.reset()
            client = redis_client()
            Character.objects.create(name="luna", display_name="Luna")
            character = FAMILIES["character"]
            result = warm_ops.warm(warm_ops.warm_targets([character]))  # GET, SET NX lease, Lua populate
            assert result.written == {"character": 1}
            assert client.ttl("character:luna") > 0
            ahead = api.read_ahead((character, {"name": "luna"}))  # MGET, as authentication does
            assert api.fetch(character, readahead=ahead, name="luna").data()["name"] == "luna"
            assert verify_ops.verify().drifted == []  # SCAN, MGET
            info = stats_ops.stats()  # INFO, DBSIZE, MEMORY USAGE, TTL; CONFIG GET is refused and reported unknown
            assert info["families"]["character"]["keys"] == 1
            assert info["redis"]["maxmemory_policy"] == "allkeys-lru"
            assert info["redis"]["stop_writes_on_bgsave_error"] is None
            api.invalidate((character, {"name": "luna"}))  # a write's invalidation: DEL of key and lease
            assert client.exists("character:luna") == 0
            # With CACHE_INVALIDATION_REPLICAS (Sentinel) each delete is followed by WAIT: allowed, and
            # here (no replica) it answers 0 of 1.
            client.set("character:luna", b"x")
            monkeypatch.setattr(settings, "CACHE_INVALIDATION_REPLICAS", 1)
            with pytest.raises(replication.NotReplicated):
                replication.unlink_confirmed(client, ["character:luna"])
            monkeypatch.setattr(settings, "CACHE_INVALIDATION_REPLICAS", 0)
            assert client.exists("character:luna") == 0
            api.fetch(character, name="luna")
            # The near cache's tracking connection, as chatart: CLIENT ID/SETNAME/TRACKING, SUBSCRIBE.
            deadline = time.monotonic() + 10
            while not any(c["name"] == "cache-near-tracking" and c["user"] == "chatart" and c["sub"] == "1"
                          for c in admin.client_list()):
                assert time.monotonic() < deadline, admin.client_list()
                api.fetch(character, name="luna")
                time.sleep(0.05)
            assert flush_ops.flush([character]) == {"character": 1}  # SCAN, UNLINK

            # Django's cache (throttles, cache_page, third-party apps) on the same user.
            cache = caches["default"]
            assert cache.add("acl-probe", 1, 60) and not cache.add("acl-probe", 2, 60)
            assert cache.incr("acl-probe") == 2 and cache.decr("acl-probe") == 1
            cache.set_many({"acl-a": [1, 2], "acl-b": "two"}, 60)
            assert cache.get_many(["acl-a", "acl-b", "acl-none"]) == {"acl-a": [1, 2], "acl-b": "two"}
            assert cache.has_key("acl-a") and cache.touch("acl-a", 120) and cache.touch("acl-a", None)
            assert cache.get_or_set("acl-c", 3, 60) == 3 and cache.ttl("acl-c") > 0
            assert sorted(cache.keys("acl-*")) == ["acl-a", "acl-b", "acl-c", "acl-probe"]
            assert sorted(cache.iter_keys("acl-*")) == ["acl-a", "acl-b", "acl-c", "acl-probe"]
            assert cache.incr_version("acl-c") == 2 and cache.get("acl-c", version=2) == 3
            cache.delete_many(["acl-a", "acl-b"])
            assert cache.get("acl-a") is None and cache.delete("acl-probe")
            cache.clear()  # SCAN + UNLINK of its own keys
            assert cache.keys("*") == []

            # Nothing the app sent was refused, but what it copes with.
            refused = {entry["object"] for entry in admin.acl_log(count=1000)
                       if entry["username"] == "chatart" and entry["reason"] == "command"}
            assert refused <= TOLERATED, refused

            client.set("character:luna", b"x")
            for command in FORBIDDEN:  # the key exists, so a refusal is the ACL's, not a missing key's
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*command)
            assert client.get("character:luna") == b"x"

        # The whole @dangerous category, asked of the server: only INFO is let through.
        allowed = set()
        for name in admin.execute_command("ACL", "CAT", "dangerous"):
            arity = admin.execute_command("COMMAND", "INFO", name)[name]["arity"]
            args = [*name.split("|"), *["x"] * (abs(arity) - len(name.split("|")))]
            if admin.execute_command("ACL", "DRYRUN", "chatart", *args) == "OK":
                allowed.add(name)
        assert allowed == {"info"}
        admin.close()
    finally:
        HEALTH.reset()
        server.close()
        shutil.rmtree(acl_path.parent, ignore_errors=True)


@pytest.mark.parametrize("url, connection_class", [
    ("redis://chatart:pass@redis:6379/0", "GuardedConnection"),
    ("rediss://chatart:pass@cache.example.net:6380/0", "GuardedSSLConnection"),
])
def test_redis_url_forms_from_the_guide_pick_the_right_connection(url, connection_class):
    import os
    import sys

    code = ("import config.settings.base as s; "
            "print(s.CACHES['default']['OPTIONS']['CONNECTION_POOL_KWARGS']['connection_class'].__name__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "REDIS_URL": url})
    assert result.stdout.strip() == connection_class
