"""The bare floor: settings and URLconf of a Django that returns constant bytes, nothing more.

No apps, no database, no authentication; only ``SecurityMiddleware`` and ``CommonMiddleware``.
bench/run.py serves it with the project's gunicorn config beside the real app, so "share of the
bare floor" says what the project's own layers (auth, middleware, DRF, cache) cost per request.

    DJANGO_SETTINGS_MODULE=bench.bare gunicorn config.wsgi:application -c config/gunicorn.conf.py
"""

from django.http import HttpResponse
from django.urls import path

SECRET_KEY = "bench-bare-floor-not-secret"  # noqa: S105 (signs nothing)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS: list[str] = []
DATABASES: dict = {}
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "bench.bare"
USE_TZ = True
LOGGING_CONFIG = None

FLOOR_BODY = b'{"floor":true,"detail":"constant bytes, no cache, no database"}'


def floor(request):
    response = HttpResponse(FLOOR_BODY, content_type="application/json")
    response["Cache-Control"] = "private, no-cache"
    return response


urlpatterns = [path("api/bench/floor", floor, name="bench-floor")]
