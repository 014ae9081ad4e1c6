# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
BIND   ?= 127.0.0.1:8000
export DJANGO_SETTINGS_MODULE ?= config.settings.local

.PHONY: run test test-quick lint bench bench-quick chaos chaos-quick install install-dev clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	mkdir -p var
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py load_demo_data
	@echo
	@echo "Ready. Try:"
	@echo "  curl -s http://$(BIND)/api/characters -H \"Authorization: Bearer \$$(curl -s -X POST http://$(BIND)/api/auth/token -H 'Content-Type: application/json' -d '{\"email\":\"demo@example.com\",\"password\":\"demo-password-123\"}' | $(PY) -c 'import json,sys; print(json.load(sys.stdin)[\"access\"])')\""
	@echo
	$(VENV)/bin/gunicorn config.wsgi:application -c config/gunicorn.conf.py --bind $(BIND) --env DJANGO_SETTINGS_MODULE=$(DJANGO_SETTINGS_MODULE)

test: install-dev
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) -m pytest

test-quick: install-dev
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) -m pytest -m "not slow"

lint: install-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) var staticfiles
