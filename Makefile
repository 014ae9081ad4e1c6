# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# make run BIND=host:port overrides GUNICORN_BIND (environment or .env; default 127.0.0.1:8000).
BIND   ?=
export DJANGO_SETTINGS_MODULE ?= config.settings.local

.PHONY: secret-key run test test-quick lint lock bench bench-quick chaos chaos-quick chaos-cluster chaos-cluster-quick bench-deps install install-dev clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The address gunicorn will bind, as config/gunicorn.conf.py works it out (for the curl line).
ADDR = $(or $(BIND),$(shell $(PY) -c "import runpy; print(runpy.run_path('config/gunicorn.conf.py')['bind'])" 2>/dev/null),127.0.0.1:8000)

# The first `make run` gives this checkout a random SECRET_KEY in .env, unless one is set already.
secret-key:
	@if [ -z "$$SECRET_KEY" ] && ! grep -qs '^SECRET_KEY=.' .env; then \
	  if [ -s .env ] && [ -n "$$(tail -c1 .env)" ]; then echo >> .env; fi; \
	  echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" >> .env; \
	  echo "Wrote a random SECRET_KEY into .env"; fi

run: install secret-key
	mkdir -p var
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py load_demo_data
	@echo
	@echo "Ready. Try:"
	@echo "  curl -s http://$(ADDR)/api/characters -H \"Authorization: Bearer \$$(curl -s -X POST http://$(ADDR)/api/auth/token -H 'Content-Type: application/json' -d '{\"email\":\"demo@example.com\",\"password\":\"demo-password-123\"}' | $(abspath $(PY)) -c 'import json,sys; print(json.load(sys.stdin)[\"access\"])')\""
	@echo
	VENV=$(VENV) config/with_jobs.sh $(VENV)/bin/gunicorn config.wsgi:application -c config/gunicorn.conf.py $(if $(BIND),--bind $(BIND)) --env DJANGO_SETTINGS_MODULE=$(DJANGO_SETTINGS_MODULE)

# In parallel (pytest-xdist): each worker has its own test database and redis-server.
TEST_WORKERS ?= auto

test: install-dev
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) -m pytest -n $(TEST_WORKERS)

test-quick: install-dev
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) -m pytest -n $(TEST_WORKERS) -m "not slow"

# requirements.lock: every runtime package, transitive ones included, with hashes (the Dockerfile
# installs it with --require-hashes). Run after changing requirements.txt.
lock: install-dev
	CUSTOM_COMPILE_COMMAND='make lock' $(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links --output-file requirements.lock requirements.txt

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports  # the app layers of .importlinter
	mkdir -p var
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) manage.py makemigrations --check --dry-run  # test settings: no .env needed
	$(VENV)/bin/mypy  # core/cache and the apps' cache.py, with django-stubs (pyproject.toml)

# Benchmark and chaos (bench/): benchmark-only Python packages, wrk and redis-server (Debian packages).
$(VENV)/.installed-bench: $(VENV)/.installed bench/requirements.txt
	$(PIP) install -r bench/requirements.txt
	touch $@

bench-deps: $(VENV)/.installed-bench
	@for tool in wrk redis-server; do command -v $$tool >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$tool >/dev/null; } || \
	  { echo "please install $$tool (apt-get install $$tool)"; exit 1; }; done

bench: bench-deps
	$(PY) bench/run.py $(BENCH_ARGS)

bench-quick: bench-deps
	$(PY) bench/run.py --quick $(BENCH_ARGS)

chaos: bench-deps
	$(PY) bench/chaos.py --scenario all $(CHAOS_ARGS)

chaos-quick: bench-deps
	$(PY) bench/chaos.py --quick $(CHAOS_ARGS)

# The same timeline on a Redis Cluster (3 primaries + 3 replicas on loopback).
chaos-cluster: bench-deps
	$(PY) bench/chaos.py --cluster $(CHAOS_ARGS)

chaos-cluster-quick: bench-deps
	$(PY) bench/chaos.py --cluster --quick $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) var staticfiles
