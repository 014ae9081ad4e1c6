"""Test settings: real PostgreSQL (DATABASE_URL, else the local server) and real Redis.

The suite starts a private redis-server per test process (see tests/support/fixtures.py) and points the
cache at it, so tests may wipe their own Redis without touching anyone else's.
"""

import os

from .base import *  # noqa: F403
from .base import DATABASES, INSTALLED_APPS, REST_FRAMEWORK, env

# Signs only the suite's own tokens; never used by `make run` or production.
SECRET_KEY = env("SECRET_KEY", default="test-only-" + "0123456789abcdef" * 3)
# The same for the offline provider's events: published here, so only the suite's own servers take it.
PAYMENT_OFFLINE_WEBHOOK_SECRET = env("PAYMENT_OFFLINE_WEBHOOK_SECRET", default="whsec_offline_test_only")

DATABASES["default"] = env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/chatart")
# 0: every test sees a fresh connection; a worker a test starts may keep one (env) to show reuse.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # as base.py: a kept connection is checked before reuse
# One test database per test process, so parallel runs on one server never drop each other's.
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default=f"test_chatart_{os.getpid()}")}
# Django's own cache tests (vendored, run against CACHES['default']) need their Poll model.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.django_cache"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# High limits, so only the tests about throttling meet them (they lower them per test); env-driven
# for a gunicorn a test starts.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
    scope: env(f"THROTTLE_{scope.upper()}", default="1000/min") for scope in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
}}
# The pending-invalidation watcher (a thread with a database connection of its own) runs only in the
# tests that start it; a gunicorn a test starts turns it on through the environment.
CACHE_PENDING_WATCH = env.bool("CACHE_PENDING_WATCH", default=False)
# Jobs run in-process at enqueue (on commit) unless a test starts a real worker (tests/jobs.py).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
JOB_RETRY_DELAY = env.float("JOB_RETRY_DELAY", default=0.2)
