"""The plain django-redis view: the bare floor (bench/bare.py) plus one django-redis GET.

The same Django as the bare floor (no apps, no database, no authentication, Security and Common
middleware), whose only view reads 400 bytes from django-redis (its default client, pickle
serializer, hiredis parser) and returns them. It is the cheapest way a Django view can serve a
value from Redis: bench/run.py reports every cached endpoint against it beside the bare floor, so
a reader sees what the cache layer costs beyond one Redis round trip.

    DJANGO_SETTINGS_MODULE=bench.plain REDIS_URL=redis://... gunicorn config.wsgi:application
"""

import os

from django.core.cache import cache
from django.http import HttpResponse
from django.urls import path

from bench.bare import ALLOWED_HOSTS, DATABASES, DEBUG, INSTALLED_APPS, LOGGING_CONFIG, MIDDLEWARE, USE_TZ  # noqa: F401

SECRET_KEY = "bench-plain-view-not-secret"  # noqa: S105 (signs nothing)
ROOT_URLCONF = "bench.plain"
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": "bench-plain",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient",
                    "PARSER_CLASS": "redis._parsers.hiredis._HiredisParser"},
    },
}
PLAIN_KEY = "value"
PLAIN_BODY = b'{"plain":"django-redis","padding":"' + b"x" * 363 + b'"}'  # 400 bytes


def plain(request):
    body = cache.get(PLAIN_KEY)
    if body is None:  # the first request of a fresh Redis
        body = PLAIN_BODY
        cache.set(PLAIN_KEY, body, timeout=None)
    response = HttpResponse(body, content_type="application/json")
    response["Cache-Control"] = "private, no-cache"
    return response


urlpatterns = [path("api/bench/floor", plain, name="bench-plain")]
