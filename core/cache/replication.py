"""A delete counts as done only when it cannot be lost in a failover.

With ``CACHE_INVALIDATION_REPLICAS`` = N > 0, every invalidation (and every replayed pending one)
is followed by ``WAIT N CACHE_INVALIDATION_WAIT_MS`` on the same connection: Redis answers how many
replicas have received the delete. Fewer than N means a primary that dies now, or is demoted after
a failover, may take the delete with it; the caller then records it as pending, so it is replayed
(and every worker bypasses Redis) until a primary confirms it.
"""

from __future__ import annotations

import redis
from django.conf import settings

from .client import pipelined, unlink_keys


class NotReplicated(redis.RedisError):
    """The primary took the delete but too few replicas confirmed it in time."""


def unlink_confirmed(client: redis.Redis, keys: list[str]) -> None:
    """Delete the keys (and their leases); with replicas configured, WAIT on the same connection
    (one pipeline) and raise NotReplicated unless enough replicas took the deletes."""
    pipe = client.pipeline(transaction=False)
    unlink_keys(pipe, keys)
    execute_confirmed(pipe)


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


def pipelined_confirmed(client: redis.Redis, commands: list[tuple[object, ...]]) -> list:
    """``execute_confirmed`` for a raw batch (``client.pipelined``): the commands, then ``WAIT``
    when replicas are asked for; NotReplicated when fewer confirmed. The commands' replies."""
    replicas = settings.CACHE_INVALIDATION_REPLICAS
    if replicas <= 0:
        return pipelined(client, commands)
    replies = pipelined(client, [*commands, ("WAIT", replicas, settings.CACHE_INVALIDATION_WAIT_MS)])
    if int(replies[-1]) < replicas:
        raise NotReplicated(f"delete reached {replies[-1]} of {replicas} replicas"
                            f" within {settings.CACHE_INVALIDATION_WAIT_MS} ms")
    return replies[:-1]
