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

# The first `make run` gives this checkout a random SECRET_KEY in .env, unless one is set already,
# and a random PAYMENT_OFFLINE_WEBHOOK_SECRET (a published one would let anyone sign payment events).
secret-key:
	@for name in SECRET_KEY PAYMENT_OFFLINE_WEBHOOK_SECRET; do \
	  if [ -z "$$(printenv $$name)" ] && ! grep -qs "^$$name=." .env; then \
	  if [ -s .env ] && [ -n "$$(tail -c1 .env)" ]; then echo >> .env; fi; \
	  echo "$$name=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" >> .env; \
	  echo "Wrote a random $$name into .env"; fi; done

# collectstatic only when something it copies may have changed: the installed packages (their
# .installed stamp), the project's static files or the settings (a few seconds of every restart).
STATIC_SOURCES := $(shell find . \( -path ./$(VENV) -o -path ./.git -o -path ./var -o -path ./staticfiles \) -prune \
  -o -path '*/static/*' -type f -print 2>/dev/null)
staticfiles/.collected: $(VENV)/.installed $(STATIC_SOURCES) $(wildcard config/settings/*.py) | secret-key
	$(PY) manage.py collectstatic --noinput -v0
	touch $@

# config/serve.py: refuses a taken port, runs gunicorn in the foreground (Ctrl-C stops it) and
# prints "Ready. Try: curl ..." once this gunicorn answers.
run: install secret-key
	@$(PY) config/serve.py --check $(if $(BIND),--bind $(BIND))
	@$(MAKE) --no-print-directory staticfiles/.collected
	mkdir -p var
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py load_demo_data
	# config/with_jobs.sh: a Celery worker and the scheduler beside gunicorn, stopped with it.
	VENV=$(VENV) config/with_jobs.sh $(PY) config/serve.py $(if $(BIND),--bind $(BIND)) --env DJANGO_SETTINGS_MODULE=$(DJANGO_SETTINGS_MODULE)

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
