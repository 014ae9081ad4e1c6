"""Pending invalidations: recorded in PostgreSQL, drained only after Redis took the delete, and a
key recorded again while a drain runs is never swallowed by it."""

from __future__ import annotations

import pytest

from core.cache import pending
from core.cache.client import redis_client
from core.models import PendingInvalidation

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_key_recorded_again_during_a_drain_stays_pending():
    """The drain read the row, deleted the key in Redis, and meanwhile another host's delete of the
    same key failed and was recorded: the drain must not remove that newer record."""
    pending.record_pending_invalidations(["user:coins:1", "user:coins:2"])
    applied = []

    def unlink_and_meanwhile_record_again(client, keys):
        applied.append(list(keys))
        if len(applied) == 1:
            pending.record_pending_invalidations(["user:coins:1"])

    pending.drain_pending_invalidations(redis_client(), unlink=unlink_and_meanwhile_record_again)

    assert sorted(applied[0]) == ["user:coins:1", "user:coins:2"]
    assert applied[1:] == [["user:coins:1"]]  # the newer record was applied by the same drain
    assert not PendingInvalidation.objects.exists()


def test_a_newer_record_survives_a_drain_that_applied_the_older_one():
    pending.record_pending_invalidations(["user:coins:1"])
    rows = list(PendingInvalidation.objects.values_list("id", "key"))

    pending.record_pending_invalidations(["user:coins:1"])  # another host, after our unlink
    PendingInvalidation.objects.filter(id__in=[pk for pk, _ in rows]).delete()  # what the drain removes

    assert PendingInvalidation.objects.filter(key="user:coins:1").exists()


def test_a_failed_unlink_keeps_the_rows(redis_server):
    pending.record_pending_invalidations(["user:coins:1"])

    def refused(client, keys):
        raise pending.redis.ResponseError("NOREPLICAS Not enough good replicas to write.")

    with pytest.raises(pending.redis.ResponseError):
        pending.drain_pending_invalidations(redis_client(), unlink=refused)
    assert PendingInvalidation.objects.filter(key="user:coins:1").exists()


def test_recording_notifies_every_listener():
    """The NOTIFY is what tells every other worker and host at once."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("host", "port", "user", "dbname", "password")},
                         autocommit=True) as listener:
        listener.execute(f"LISTEN {pending.CHANNEL}")
        pending.record_pending_invalidations(["user:coins:1"])
        notes = list(listener.notifies(timeout=2, stop_after=1))
    assert [n.channel for n in notes] == [pending.CHANNEL]
