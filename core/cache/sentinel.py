"""Redis Sentinel by configuration, and the startup check of every Redis setting.

With ``REDIS_SENTINELS`` set, django-redis's default cache (and so the cache layer, which shares
its connection pool) asks the sentinels which server is the primary of ``REDIS_SENTINEL_SERVICE``,
and follows it through a failover. ``REDIS_URL`` then gives only the scheme (``rediss://`` for TLS
to the servers), the primary's user and password, and the database number; its host is ignored.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from django.core import checks

from .client import parse_host_ports


def parse_sentinels(entries: list[str]) -> list[tuple[str, int]]:
    return parse_host_ports(entries, setting="REDIS_SENTINELS")


def sentinel_location(url: str, service: str) -> str:
    """REDIS_URL with the service name in place of host:port (what SentinelConnectionFactory reads)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{service}" if credentials else service
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def use_sentinels(cache: dict, *, sentinels: list[str], service: str, username: str = "", password: str = "",
                  tls: bool = False) -> None:
    """Turn the django-redis cache settings ``cache`` into a Sentinel-managed one. A bad setting
    leaves it alone: the system check below reports it at startup."""
    try:
        addresses = parse_sentinels(sentinels)
    except ValueError:
        return
    if not service:
        return
    options = cache["OPTIONS"]
    options.pop("CONNECTION_POOL_KWARGS", None)  # the pool class picks the guarded connection
    sentinel_kwargs = {"socket_timeout": options.get("SOCKET_TIMEOUT"),
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
    })
    cache["LOCATION"] = sentinel_location(cache["LOCATION"], service)


@checks.register(checks.Tags.caches)
def check_redis_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A bad REDIS_URL or Sentinel setting stops the app at startup (migrate, runserver, check,
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
    sentinels = settings.REDIS_SENTINELS
    if sentinels:
        try:
            parse_sentinels(sentinels)
        except ValueError as exc:
            errors.append(checks.Error(str(exc), hint="REDIS_SENTINELS=host1:26379,host2:26379,host3:26379",
                                       id="core.E011"))
        if not settings.REDIS_SENTINEL_SERVICE:
            errors.append(checks.Error("REDIS_SENTINELS is set but REDIS_SENTINEL_SERVICE is empty",
                                       hint="the name the sentinels monitor (sentinel monitor NAME ...)",
                                       id="core.E012"))
    cluster = getattr(settings, "REDIS_CLUSTER_NODES", None)
    if sentinels and cluster:
        errors.append(checks.Error("REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set: pick one", id="core.E015"))
    replicas, wait_ms = settings.CACHE_INVALIDATION_REPLICAS, settings.CACHE_INVALIDATION_WAIT_MS
    if replicas < 0 or wait_ms < 0:
        errors.append(checks.Error("CACHE_INVALIDATION_REPLICAS and CACHE_INVALIDATION_WAIT_MS must not be negative",
                                   id="core.E013"))
    elif replicas and wait_ms / 1000 >= settings.REDIS_SOCKET_TIMEOUT:
        errors.append(checks.Error(
            f"CACHE_INVALIDATION_WAIT_MS ({wait_ms}) must stay below REDIS_SOCKET_TIMEOUT "
            f"({settings.REDIS_SOCKET_TIMEOUT} s): WAIT would time the connection out", id="core.E014"))
    return errors


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
