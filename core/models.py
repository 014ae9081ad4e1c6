from django.db import models


class PendingInvalidation(models.Model):
    """A cache key whose delete could not reach Redis (or was not confirmed by its replicas). Only
    this key bypasses the cache until its delete is applied and confirmed; then the row goes."""

    key = models.CharField(max_length=1024, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The key's Redis Cluster hash slot, computed once when recorded: a cluster node's sync reads
    # only the rows of the slots it serves (null: recorded before the column existed).
    slot = models.PositiveSmallIntegerField(null=True)

    class Meta:
        indexes = [models.Index(fields=["slot", "id"], name="core_pending_slot_id")]

    def __str__(self) -> str:
        return self.key
