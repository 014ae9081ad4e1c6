from django.db import models


class PendingInvalidation(models.Model):
    """A cache key whose delete could not reach Redis. Applied (and removed) before cached reads
    are trusted again, so an outage cannot resurrect an old value."""

    key = models.CharField(max_length=1024, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key
