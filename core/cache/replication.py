"""A delete counts as done only when it cannot be lost in a failover.

With ``CACHE_INVALIDATION_REPLICAS`` = N > 0, every invalidation (and every replayed pending one)
is followed by ``WAIT N CACHE_INVALIDATION_WAIT_MS`` on the same connection: Redis answers how many
replicas have received the delete. Fewer than N means a primary that dies now, or is demoted after
a failover, may take the delete with it; the caller then records it as pending, so it is replayed
(and every worker reads its keys from the database) until a primary confirms it.

Under Sentinel a primary left without any replica that could be promoted in its place (its old
primary dead, or demoted and not yet reconfigured) confirms a delete alone (sentinel.py,
``lone_primary``): waiting for a replica there would keep the cache off until the dead node
returns. A refused or unconfirmed delete also makes the pool ask the sentinels whether the primary
moved, so the replay goes to the new one.
"""

from __future__ import annotations

import redis
from django.conf import settings

from .client import pipelined, unlink_commands
from .sentinel import lone_primary, lone_recently, recheck_primary

_REFUSALS = ("NOREPLICAS", "READONLY")


class NotReplicated(redis.RedisError):
    """The primary took the delete but too few replicas confirmed it in time."""


def unlink_confirmed(client: redis.Redis, keys: list[str]) -> None:
    """Delete the keys (and their leases); with replicas configured, WAIT on the same connection
    (one batch) and raise NotReplicated unless enough replicas took the deletes (or a lone
    Sentinel primary did)."""
    pipelined_confirmed(client, unlink_commands(keys))


def execute_confirmed(pipe: redis.client.Pipeline, *, where: str = "") -> None:
    """Send the deletes queued on ``pipe``, followed by ``WAIT CACHE_INVALIDATION_REPLICAS`` when
    that is set; NotReplicated when fewer replicas (of ``where``, for the message) confirmed."""
    replicas = settings.CACHE_INVALIDATION_REPLICAS
    if replicas > 0:
        pipe.execute_command("WAIT", replicas, settings.CACHE_INVALIDATION_WAIT_MS)
    results = pipe.execute()
    if replicas > 0 and int(results[-1]) < replicas:
        raise NotReplicated(f"delete reached {results[-1]} of {replicas} replicas{where}"
                            f" within {settings.CACHE_INVALIDATION_WAIT_MS} ms")


class _LoneCheck:
    """Run on the connection that took the batch: when its WAIT fell short, may the primary
    confirm the deletes alone?"""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.verdicts: list[bool] = []  # one per batch sent (a NOSCRIPT retry sends a second)

    def __call__(self, conn, replies: list) -> None:
        waited = replies[-1] if replies else None
        if isinstance(waited, int) and waited < self.replicas:
            self.verdicts.append(lone_primary(conn))

    @property
    def lone(self) -> bool:
        return bool(self.verdicts) and all(self.verdicts)


def pipelined_confirmed(client: redis.Redis, commands: list[tuple[object, ...]]) -> list:
    """``execute_confirmed`` for a raw batch (``client.pipelined``): the commands, then ``WAIT``
    when replicas are asked for; NotReplicated when fewer confirmed (and the primary is not a lone
    Sentinel primary). The commands' replies."""
    replicas = settings.CACHE_INVALIDATION_REPLICAS
    if replicas <= 0:
        return pipelined(client, commands)
    check = _LoneCheck(replicas)
    # A primary found alone a moment ago has no replica to wait for: wait 1 ms (0 would be for
    # ever). A replica that attached since shows on the check and the delete waits its turn.
    wait_ms = 1 if lone_recently(client) else settings.CACHE_INVALIDATION_WAIT_MS
    try:
        replies = pipelined(client, [*commands, ("WAIT", replicas, wait_ms)], after=check)
    except redis.ResponseError as exc:
        if str(exc).startswith(_REFUSALS):
            recheck_primary(client)  # refused by a demoted or isolated primary: has it moved?
        raise
    if int(replies[-1]) < replicas and not check.lone:
        recheck_primary(client)
        raise NotReplicated(f"delete reached {replies[-1]} of {replicas} replicas"
                            f" within {settings.CACHE_INVALIDATION_WAIT_MS} ms")
    return replies[:-1]
