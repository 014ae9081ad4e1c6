# The Celery app is loaded with Django, so @shared_task jobs bind to it and enqueue with its settings.
from .celery import app as celery_app

__all__ = ("celery_app",)
