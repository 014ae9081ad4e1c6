"""How this deployment reaches Redis (one server, Sentinel, or Cluster), decided in one place.

Settings hand the declared values (``REDIS_CLUSTER_NODES``, ``REDIS_SENTINELS`` ...) to
``configure_cache`` once, which turns ``CACHES["default"]`` into the django-redis options of that
topology and records the choice in them (``OPTIONS["TOPOLOGY"]``). Everything else in the engine
asks ``TOPOLOGY``: which health (breaker) guards a key, whether keys carry Cluster hash tags, and
whether multi-key batches may span keys. No other module reads those settings.

The choice is read from the settings when the client is first used and kept; it is made again only
if the cache settings change (tests switch topologies that way).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .client import CACHE_ERRORS, parse_host_ports
from .cluster import cluster_client, node_health, node_of
from .health import HEALTH, CacheHealth

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"


# --- settings: building CACHES["default"] ------------------------------------------------------


def configure_cache(cache: dict, *, cluster_nodes: list[str], sentinels: list[str], sentinel_service: str,
                    sentinel_username: str = "", sentinel_password: str = "", sentinel_tls: bool = False,
                    namespace: str = "") -> dict:
    """``cache`` (the django-redis settings of ``CACHES["default"]``) for the topology these values
    name, in place, and returned. A setting that cannot be used is recorded and leaves the cache on
    one server: ``check_redis_settings`` stops the app at startup with it."""
    problems = []
    if sentinels and cluster_nodes:
        problems.append(("core.E015", "REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set: pick one", ""))
    if sentinels:
        try:
            addresses = parse_host_ports(sentinels, setting="REDIS_SENTINELS")
        except ValueError as exc:
            problems.append(("core.E011", str(exc), "REDIS_SENTINELS=host1:26379,host2:26379,host3:26379"))
        if not sentinel_service:
            problems.append(("core.E012", "REDIS_SENTINELS is set but REDIS_SENTINEL_SERVICE is empty",
                             "the name the sentinels monitor (sentinel monitor NAME ...)"))
        if not problems:
            _use_sentinels(cache, addresses, service=sentinel_service, username=sentinel_username,
                           password=sentinel_password, tls=sentinel_tls)
    elif cluster_nodes:
        if {"{", "}"} & set(namespace):
            # A brace in the namespace would become every key's hash tag: one slot for everything.
            raise ImproperlyConfigured("CACHE_NAMESPACE must not contain { or } with REDIS_CLUSTER_NODES")
        cache["OPTIONS"] = cluster_options(cache["OPTIONS"], nodes=cluster_nodes)
    cache["OPTIONS"].setdefault("TOPOLOGY", {"kind": SINGLE})["problems"] = problems
    return cache


def cluster_options(options: dict, *, nodes: list[str]) -> dict:
    """The django-redis OPTIONS of ``caches["default"]`` on a cluster with these seed nodes. A node
    list that does not parse is a ValueError on first use, which degrades like an unreachable Redis."""
    options = {**options, "CLIENT_CLASS": "core.cache.cluster.ClusterCacheClient",
               "CONNECTION_FACTORY": "core.cache.cluster.ClusterConnectionFactory",
               "TOPOLOGY": {"kind": CLUSTER, "nodes": list(nodes)}}
    options.pop("CONNECTION_POOL_KWARGS", None)  # the cluster builds its own pools per node
    return options


def sentinel_location(url: str, service: str) -> str:
    """REDIS_URL with the service name in place of host:port (what SentinelConnectionFactory reads)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{service}" if credentials else service
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _use_sentinels(cache: dict, addresses: list[tuple[str, int]], *, service: str, username: str, password: str,
                   tls: bool) -> None:
    """django-redis asks the sentinels which server is the primary of ``service`` and follows it
    through a failover. REDIS_URL then gives only the scheme (``rediss://`` for TLS to the
    servers), the primary's user and password, and the database number; its host is ignored."""
    options = cache["OPTIONS"]
    options.pop("CONNECTION_POOL_KWARGS", None)  # the pool class picks the guarded connection
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": options.get("SOCKET_TIMEOUT"),
                                       "socket_connect_timeout": options.get("SOCKET_CONNECT_TIMEOUT")}
    if username:
        sentinel_kwargs["username"] = username
    if password:
        sentinel_kwargs["password"] = password
    if tls:
        sentinel_kwargs["ssl"] = True
    options.update({
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "CONNECTION_POOL_CLASS": "core.cache.health.GuardedSentinelConnectionPool",
        "SENTINELS": addresses,
        "SENTINEL_KWARGS": sentinel_kwargs,
        "TOPOLOGY": {"kind": SENTINEL, "service": service},
    })
    cache["LOCATION"] = sentinel_location(cache["LOCATION"], service)


def use_sentinels(cache: dict, *, sentinels: list[str], service: str) -> dict:
    """``cache`` on these sentinels (a test's own sentinel setup)."""
    return configure_cache(cache, cluster_nodes=[], sentinels=sentinels, sentinel_service=service)


# --- the engine's view of it -------------------------------------------------------------------


class Topology:
    """The topology in use. ``kind``, ``cluster`` and ``service`` are plain attributes once chosen
    (a cached read asks on every hit: as cheap as a settings lookup)."""

    _CHOSEN = ("kind", "cluster", "service")
    kind: str
    cluster: bool  # keys carry hash tags, one health per node, no multi-key command across slots
    service: str  # Sentinel: the service whose primary the cache talks to; "" otherwise

    def __getattr__(self, name: str) -> Any:
        # Only reached while the topology is not chosen yet (or was forgotten: settings changed).
        if name not in self._CHOSEN:
            raise AttributeError(name)
        self._choose()
        return self.__dict__[name]

    def _choose(self) -> None:
        from django.conf import settings

        chosen = settings.CACHES["default"].get("OPTIONS", {}).get("TOPOLOGY", {})
        kind = chosen.get("kind", SINGLE)
        self.kind, self.cluster = kind, kind == CLUSTER
        self.service = chosen.get("service", "") if kind == SENTINEL else ""

    def forget(self) -> None:
        for name in self._CHOSEN:
            self.__dict__.pop(name, None)

    def health_for(self, key: str) -> CacheHealth:
        """The health that decides whether this full key may be read or written now: the process's
        on one server (or Sentinel's primary), the key's node's in a cluster. When the cluster
        cannot be reached at all, the process's health stands for it."""
        if not self.cluster or HEALTH.blocking():
            return HEALTH
        try:
            return node_health(node_of(cluster_client(), key))
        except CACHE_ERRORS as exc:
            HEALTH.failure(exc, "topology")
            return HEALTH


TOPOLOGY = Topology()
HEALTH.stands_for_cluster = lambda: TOPOLOGY.cluster
HEALTH.sentinel_service = lambda: TOPOLOGY.service


def _settings_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "CACHES":
        TOPOLOGY.forget()


setting_changed.connect(_settings_changed, dispatch_uid="core.cache.topology")


@checks.register(checks.Tags.caches)
def check_redis_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A bad REDIS_URL or topology setting stops the app at startup (migrate, runserver, check,
    gunicorn's on_starting), not with a 500 on every request."""
    from django.conf import settings
    from redis.connection import parse_url

    errors: list[checks.CheckMessage] = []
    url = settings.REDIS_URL
    try:
        options = parse_url(url)
        if urlsplit(url).scheme in ("redis", "rediss") and not urlsplit(url).hostname:
            raise ValueError("it names no host")
        int(options.get("db", 0))
    except (ValueError, TypeError) as exc:
        errors.append(checks.Error(f"REDIS_URL {_redacted(url)!r} is not a Redis URL: {exc}",
                                   hint="redis://[USER:PASSWORD@]HOST:PORT/DB, rediss:// for TLS",
                                   id="core.E010"))
    topology = settings.CACHES["default"].get("OPTIONS", {}).get("TOPOLOGY", {})
    errors.extend(checks.Error(message, hint=hint or None, id=id_) for id_, message, hint in topology.get("problems", ()))
    replicas, wait_ms = settings.CACHE_INVALIDATION_REPLICAS, settings.CACHE_INVALIDATION_WAIT_MS
    if replicas < 0 or wait_ms < 0:
        errors.append(checks.Error("CACHE_INVALIDATION_REPLICAS and CACHE_INVALIDATION_WAIT_MS must not be negative",
                                   id="core.E013"))
    elif replicas and wait_ms / 1000 >= settings.REDIS_SOCKET_TIMEOUT:
        errors.append(checks.Error(
            f"CACHE_INVALIDATION_WAIT_MS ({wait_ms}) must stay below REDIS_SOCKET_TIMEOUT "
            f"({settings.REDIS_SOCKET_TIMEOUT} s): WAIT would time the connection out", id="core.E014"))
    kind = topology.get("kind")
    if kind in (CLUSTER, SENTINEL) and _broker_on(settings, url, topology.get("nodes", ())):
        # kombu's Redis transport speaks to one server: on a cluster node its queue keys answer MOVED
        # (every job would wait for the sweep, and a frozen node freezes every commit that enqueues);
        # with sentinels REDIS_URL's host names no server at all.
        where = "a Redis Cluster node" if kind == CLUSTER else "REDIS_URL, whose host Sentinel mode ignores"
        errors.append(checks.Error(
            f"CELERY_BROKER_URL is {where}: the job queue needs a Redis of its own",
            hint="CELERY_BROKER_URL=redis://broker-host:6379/0 (noeviction, AOF on), or "
            "sentinel://s1:26379;sentinel://s2:26379 with CELERY_BROKER_SENTINEL_MASTER", id="core.E016"))
    return errors


def _broker_on(settings, redis_url: str, nodes) -> bool:
    """Whether the job broker (when jobs leave the process) is REDIS_URL or one of these nodes."""
    broker = getattr(settings, "CELERY_BROKER_URL", "")
    if not broker or getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        return False
    if broker == redis_url:
        return True
    parts = urlsplit(broker)
    try:
        address = f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        return False
    return address in set(nodes)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
