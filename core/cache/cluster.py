"""Redis Cluster mode (``REDIS_CLUSTER_NODES``, see topology.py): redis-py's ``RedisCluster`` behind django-redis,
and the cache's health kept per node.

* The client: one ``RedisCluster`` per process, built from the seed nodes by
  ``ClusterConnectionFactory`` (django-redis's CONNECTION_FACTORY), so ``caches["default"]`` and
  ``redis_client()`` both talk to the cluster. ``ClusterCacheClient`` makes django-redis's
  multi-key calls slot-safe.
* Health: each node has its own ``CacheHealth`` (breaker, restart detection, sync), so one failed
  node does not switch off the cache on the others. A node's sync drains the pending
  invalidations of the slots it serves, reading only their rows (the slot is recorded with each
  row, and indexed). Only the nodes that serve a pending key's slot, and nodes met anew (a
  replica promoted to primary, a restarted node), sync: a pending key is bypassed wherever its
  slot lives, so a topology change (failover, MOVED, reshard) re-syncs no healthy node.
* Deletes go to each key's node directly (one DEL per slot), followed there by
  ``WAIT CACHE_INVALIDATION_REPLICAS`` when that is set: a delete the node's replicas did not
  confirm is recorded as pending (every process then bypasses those keys until it is replayed and
  confirmed), so a primary that dies before replicating a delete cannot take it with it.
"""

from __future__ import annotations

import threading
import time
from typing import cast
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django_redis.exceptions import ConnectionInterrupted
from django_redis.pool import ConnectionFactory
from redis.backoff import NoBackoff
from redis.cluster import PRIMARY, ClusterNode, RedisCluster
from redis.connection import Connection, SSLConnection
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisClusterException
from redis.retry import Retry

from .client import CACHE_ERRORS, full_key, parse_host_ports, redis_client, unlink_keys
from .django_cache import Client as DjangoCacheClient
from .health import CLOSED, OPEN, CacheHealth, GuardedMixin, Healths, register_health_source
from .pending import PENDING, drain_rows, reload_pending_keys
from .replication import execute_confirmed


def parse_nodes(nodes: list[str] | str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (or a list) as (host, port) pairs. A malformed entry is a ValueError,
    which the cache layer treats like an unreachable Redis (the database serves)."""
    pairs = parse_host_ports(nodes.split(",") if isinstance(nodes, str) else nodes, setting="REDIS_CLUSTER_NODES")
    if not pairs:
        raise ValueError("REDIS_CLUSTER_NODES names no node")
    return pairs


# --- health per node ---------------------------------------------------------------------------


class NodeHealth(CacheHealth):
    """One cluster node's breaker and sync state. Syncing drains the pending invalidations whose
    keys live in slots this node serves now."""

    def __init__(self, node: str) -> None:
        self.node = node
        super().__init__()

    @property
    def metric_node(self) -> str:  # type: ignore[override]
        return self.node

    def client(self) -> redis.Redis:
        node = cluster_client().nodes_manager.get_node(node_name=self.node)
        if node is None or node.redis_connection is None:
            raise redis.ConnectionError(f"cluster node {self.node} is not in the cluster's topology")
        return node.redis_connection

    def owns_pending(self) -> bool:
        """Does this node serve the slot of some pending key?"""
        if PENDING.overflow:
            return True
        try:
            cluster = cluster_client()
            return any(node_of(cluster, full_key(key)) == self.node for key in PENDING.keys())
        except CACHE_ERRORS:
            return True

    def drain_pending(self, client: redis.Redis) -> None:
        if not PENDING.loaded or PENDING.overflow:  # the process's first look at the table
            reload_pending_keys()
        self.apply_pending(client)

    def drain(self, client: redis.Redis) -> int:
        return drain_node(cluster_client(), self.node)

    def failure(self, exc: BaseException, operation: str = "redis") -> None:
        super().failure(exc, operation)
        # Only a client already built is asked: a failure may come from inside its construction.
        built = next(iter(list(ClusterConnectionFactory._clusters.values())), None)
        if self.state is OPEN and built is not None and not self.serves_slots(built):
            # A node that is no longer a primary keeps no key off the cache: no alert for it.
            self.breaker_gauge.set(0)

    def serves_slots(self, cluster: RedisCluster | None = None) -> bool:
        """Does this process's slot map have this node as the primary of some slot?"""
        try:
            slots = (cluster or cluster_client()).nodes_manager.slots_cache
        except CACHE_ERRORS:
            return True  # cannot tell: sync as usual
        return any(nodes and nodes[0].name == self.node for nodes in list(slots.values()))

    def unlink(self, keys: list[str]) -> None:
        unlink_on_node(self.node, keys)

    def sync(self) -> bool:
        if not self.serves_slots():
            # Gone from the map (a dead primary its replica replaced): no key is read from it or
            # deleted on it, so its breaker is not what keeps any key off the cache. Not synced
            # either: a caller that chose this node from an older map must not read through it.
            self.state = CLOSED
            self.breaker_gauge.set(0)
            return False
        if super().sync():
            return True
        # The node may be gone for good (its replica took over): nothing else would tell the
        # client, since requests skip this node while its breaker is open. Ask the cluster.
        try:
            cluster_client().nodes_manager.initialize()
        except CACHE_ERRORS:
            pass
        return False


def cluster_client() -> RedisCluster:
    """The client, typed as what it is in cluster mode."""
    return cast(RedisCluster, redis_client())


_NODES: Healths[NodeHealth] = Healths(NodeHealth)


def node_health(name: str) -> NodeHealth:
    return _NODES.get(name)


def node_healths() -> dict[str, NodeHealth]:
    return _NODES.all()


register_health_source(lambda: node_healths().values())  # the pending watcher signals every node


def reset_node_healths() -> None:
    _NODES.reset(forget=True)


def topology_changed(serving: set[str] | None = None) -> None:
    """Slots may now be served by another node. Nothing to re-sync: a pending key is bypassed
    wherever its slot lives, and a node met anew syncs on its first connection. A node that serves
    no slot any more (a dead primary replaced by its replica) no longer counts as an open breaker:
    no key is read from it, and its gauge says so."""
    for name, health in _NODES.all().items():
        if serving is not None and name not in serving:
            health.state = CLOSED
            health.breaker_gauge.set(0)


def node_of(cluster: RedisCluster, key: str) -> str:
    """The name (host:port) of the primary that serves this full key's slot."""
    return cluster.nodes_manager.get_node_from_slot(key_slot(key.encode("utf-8", "surrogateescape"))).name


def slot_ranges(cluster: RedisCluster, node: str) -> list[tuple[int, int]]:
    """The slots ``node`` serves as the primary, as (first, last) ranges."""
    slots = sorted(slot for slot, nodes in list(cluster.nodes_manager.slots_cache.items())
                   if nodes and nodes[0].name == node)
    ranges: list[tuple[int, int]] = []
    for slot in slots:
        if ranges and ranges[-1][1] == slot - 1:
            ranges[-1] = (ranges[-1][0], slot)
        else:
            ranges.append((slot, slot))
    return ranges


def drain_node(cluster: RedisCluster, node: str, batch: int = 500) -> int:
    """Apply the recorded deletes of keys in the slots ``node`` serves, reading only those rows (by
    their recorded slot); other nodes' rows stay for those nodes (one may be down). Rows go only
    after Redis confirmed the delete."""
    from django.db.models import Q

    from core.models import PendingInvalidation

    ranges = slot_ranges(cluster, node)
    if not ranges:
        return 0
    mine = Q()
    for first, last in ranges:
        mine |= Q(slot__range=(first, last))
    done = drain_rows(PendingInvalidation.objects.filter(mine), lambda keys: unlink_on_node(node, keys), batch, node=node)
    # Rows recorded before the slot column existed: sorted out here, as they always were.
    legacy = [(pk, key) for pk, key in PendingInvalidation.objects.filter(slot__isnull=True).values_list("id", "key")
              if node_of(cluster, full_key(key)) == node]
    if legacy:
        done += drain_rows(PendingInvalidation.objects.filter(id__in=[pk for pk, _ in legacy]),
                           lambda keys: unlink_on_node(node, keys), batch, node=node)
    return done


def unlink_on_node(node: str, keys: list[str]) -> None:
    """Delete keys (and their leases) of slots ``node`` serves, on that node: one pipeline of a DEL
    per slot (a multi-key command must not span slots), then, with CACHE_INVALIDATION_REPLICAS = N,
    ``WAIT N CACHE_INVALIDATION_WAIT_MS`` on the same connection. Raises NotReplicated when fewer
    than N of this node's replicas confirmed; a slot that moved meanwhile answers MOVED (an error:
    the caller records the delete, and the replay finds the slot's new node)."""
    by_slot: dict[int, list[str]] = {}
    for key in keys:
        by_slot.setdefault(key_slot(full_key(key).encode("utf-8", "surrogateescape")), []).append(key)
    pipe = node_health(node).client().pipeline(transaction=False)
    for group in by_slot.values():
        unlink_keys(pipe, group)
    try:
        execute_confirmed(pipe, where=f" of {node}")
    except MovedError:
        # The slot has another owner (a failover): learn the new map now, so the replay and the
        # next deletes go there, rather than after this node's breaker cooled down.
        try:
            cluster_client().nodes_manager.initialize()
        except CACHE_ERRORS:
            pass
        raise


class _NodeGuard(GuardedMixin):
    """A connection to one cluster node, guarded by that node's breaker."""

    @property
    def health(self) -> CacheHealth:
        return node_health(f"{self.host}:{self.port}")


class GuardedClusterConnection(_NodeGuard, Connection):
    pass


class GuardedClusterSSLConnection(_NodeGuard, SSLConnection):
    pass


def probe_nodes(sync: bool = True) -> dict:
    """/api/health's cache component in cluster mode: each primary the client knows pinged (a node
    whose breaker is open counts as down without a wait). ``up`` when all answer, ``degraded`` when
    some do (their slots stay cached), ``down`` when none does or the cluster cannot be reached.
    ``sync``: close the breakers of the nodes that answer (the database is up to sync with)."""
    started = time.perf_counter()
    nodes: dict[str, dict] = {}
    try:
        manager = cluster_client().nodes_manager
        primaries = sorted((n for n in manager.nodes_cache.values() if n.server_type == PRIMARY), key=lambda n: n.name)
    except CACHE_ERRORS as exc:
        primaries, error = [], type(exc).__name__
    else:
        error = "no primary"
    for node in primaries:
        health = node_health(node.name)
        began = time.perf_counter()
        try:
            if node.redis_connection is None:
                raise redis.ConnectionError("not connected")
            node.redis_connection.ping()
        except CACHE_ERRORS as exc:
            nodes[node.name] = {"status": "down", "error": type(exc).__name__}
        else:
            if sync:
                health.ready()  # it answers: close its breaker now (after syncing), as for one Redis
            nodes[node.name] = {"status": "up"}
        nodes[node.name].update(latency_ms=round((time.perf_counter() - began) * 1000, 2), breaker=health.state)
    up = sum(1 for n in nodes.values() if n["status"] == "up")
    if nodes and up < len(nodes):
        try:  # a dead primary may have been replaced: the next check reports the new map
            manager.initialize()
        except CACHE_ERRORS:
            pass
    status = "up" if nodes and up == len(nodes) else "degraded" if up else "down"
    component = {"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 2), "nodes": nodes}
    if not up:
        component["error"] = next((n["error"] for n in nodes.values()), error)
    return component


# --- the client ------------------------------------------------------------------------------


class ClusterConnectionFactory(ConnectionFactory):
    """django-redis CONNECTION_FACTORY: one RedisCluster per process for the seed nodes."""

    _clusters: dict[tuple, RedisCluster] = {}
    _lock = threading.Lock()

    def connect(self, url: str) -> RedisCluster:
        nodes = tuple(parse_nodes(self.options["TOPOLOGY"]["nodes"]))
        cluster = self._clusters.get(nodes)
        if cluster is None:
            with self._lock:
                cluster = self._clusters.get(nodes) or self._build(nodes)
                self._clusters[nodes] = cluster
        return cluster

    def _build(self, nodes: tuple[tuple[str, int], ...]) -> RedisCluster:
        options = self.options
        (host, port), *others = nodes
        # Scheme (rediss: TLS) and credentials come from REDIS_URL, the nodes from the list.
        base = urlsplit(settings.REDIS_URL)
        userinfo = base.netloc.rpartition("@")[0]
        tls = base.scheme == "rediss"
        cluster = RedisCluster(
            # From a URL, so the node pools take our connection class (redis-py passes it only then).
            url=f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}{host}:{port}/0",
            startup_nodes=[ClusterNode(h, p) for h, p in others],
            # Other slots keep working while some are not served (a primary down, no replica yet).
            require_full_coverage=False,
            # Fail fast: the breaker and the database take over; the next request retries.
            retry=Retry(NoBackoff(), 0),
            connection_class=GuardedClusterSSLConnection if tls else GuardedClusterConnection,
            socket_timeout=options.get("SOCKET_TIMEOUT"),
            socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT"),
        )
        manager = cluster.nodes_manager
        for name in ("initialize", "move_slot"):
            setattr(manager, name, _then_topology_changed(manager, getattr(manager, name)))
        return cluster

    def disconnect(self, connection: RedisCluster) -> None:
        # The cluster client is shared by the process; its node pools reconnect on their own.
        pass

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            for cluster in cls._clusters.values():
                cluster.close()
            cls._clusters.clear()


def _then_topology_changed(manager, method):
    def owners() -> dict[int, str]:
        return {slot: nodes[0].name for slot, nodes in manager.slots_cache.items() if nodes}

    def wrapped(*args, **kwargs):
        before = owners()
        try:
            return method(*args, **kwargs)
        finally:
            after = owners()
            if after != before:
                topology_changed(set(after.values()))

    return wrapped


class ClusterCacheClient(DjangoCacheClient):
    """django-redis's client on a cluster: multi-key reads split per slot, and cluster errors
    (which are not RedisErrors) reported like connection errors so IGNORE_EXCEPTIONS covers them."""

    def get_client(self, *args, **kwargs):
        try:
            return super().get_client(*args, **kwargs)
        except RedisClusterException as exc:
            raise ConnectionInterrupted(connection=None) from exc

    def get_many(self, keys, version=None, client=None):
        if client is None:
            client = self.get_client(write=False)
        if not keys:
            return {}
        recovered = {self.make_key(key, version=version): key for key in keys}
        try:
            values = client.mget_nonatomic(list(recovered))
        except (RedisClusterException, redis.RedisError) as exc:
            raise ConnectionInterrupted(connection=client) from exc
        return {recovered[k]: self.decode(v) for k, v in zip(recovered, values, strict=True) if v is not None}

