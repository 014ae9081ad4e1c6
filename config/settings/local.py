"""Developer settings: `make run` uses these."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import SECRET_KEY, env

DEBUG = env.bool("DEBUG", default=True)
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is not set: `make run` writes a random one into .env, or set it yourself.")
