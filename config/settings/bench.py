"""Benchmark settings (make bench, make chaos): production-like, plus bench-only counters and a floor
endpoint. BENCH_CACHE_MODE picks what caches the reads:

* ``ours``     django-redis and this project's cache layer (core/cache);
* ``none``     Django's DummyCache, the cache layer off: every read goes to PostgreSQL;
* ``cachalot`` django-cachalot's automatic ORM query cache in Redis, the cache layer off.
"""

from datetime import timedelta

from .base import *  # noqa: F403
from .base import CACHES, DATABASES, INSTALLED_APPS, MIDDLEWARE, REDIS_URL, SIMPLE_JWT, env

# Signs only the benchmark's tokens on its private servers; never used by `make run` or production.
SECRET_KEY = env("SECRET_KEY", default="bench-only-" + "0123456789abcdef" * 3)
PAYMENT_OFFLINE_WEBHOOK_SECRET = env("PAYMENT_OFFLINE_WEBHOOK_SECRET", default="whsec_offline_bench_only")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
DATABASES["default"] = env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/bench_chatart")
DATABASES["default"]["CONN_MAX_AGE"] = 600
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
ROOT_URLCONF = "bench.app"
# First, so it sees every query of the request, authentication included. BENCH_COUNT_SQL=0 leaves
# it out (bench/inproc.py: the CPU of the app alone).
if env.bool("BENCH_COUNT_SQL", default=True):
    MIDDLEWARE = ["bench.app.SqlCountMiddleware", *MIDDLEWARE]
SIMPLE_JWT = {**SIMPLE_JWT, "ACCESS_TOKEN_LIFETIME": timedelta(hours=6)}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="WARNING")},
}

BENCH_CACHE_MODE = env("BENCH_CACHE_MODE", default="ours")
if BENCH_CACHE_MODE == "none":
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    CACHE_LAYER_ENABLED = False
elif BENCH_CACHE_MODE == "cachalot":
    CACHE_LAYER_ENABLED = False
    INSTALLED_APPS = [*INSTALLED_APPS, "cachalot"]
    # cachalot stores query results (tuples, datetimes, Decimals): its own alias with
    # django-redis' default serializer and key function, on the benchmark's private Redis.
    CACHES = {
        **CACHES,
        "cachalot": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient",
                        "PARSER_CLASS": "redis._parsers.hiredis._HiredisParser"},
        },
    }
    CACHALOT_CACHE = "cachalot"
    # cachalot's documented advice for tables written often: leave them uncached. A write
    # invalidates every cached query of its table, so in the mix (10% writes) caching these
    # would only add Redis writes and invalidations. The user table stays cached: authentication
    # reads it on every request.
    CACHALOT_UNCACHABLE_TABLES = frozenset((
        "django_migrations", "django_session", "core_pendinginvalidation",
        "chat_chatmessage", "chat_chatsession", "generation_generation",
        "accounts_coinledgerentry", "subscriptions_dailyusage",
    ))
elif BENCH_CACHE_MODE != "ours":
    raise ValueError(f"BENCH_CACHE_MODE must be none, ours or cachalot, not {BENCH_CACHE_MODE!r}")
