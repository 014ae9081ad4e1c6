"""Django's default cache (``caches["default"]``: throttles, ``cache_page``, the cache middleware,
third-party apps) as a correct Django cache in a key space of its own, beside the key families.

Its keys are django-redis's ``<CACHE_NAMESPACE>django:<version>:<key>`` and its values pickles, as
with Django's own Redis backend: versions, model instances, bytes, tuples, datetimes and Decimals
all come back as they went in. The families (``user:coins:{id}`` ...) never pass through it: the
cache layer writes their JSON through the raw connection (core.cache.client). Pickles mean only
trusted clients may write to this Redis (see the operations guide).
"""

from __future__ import annotations

from django.conf import settings
from django_redis.client.default import DefaultClient, _main_exceptions, glob_escape
from django_redis.exceptions import ConnectionInterrupted

BATCH = 1000


def reverse_key(key: str) -> str:
    """django-redis REVERSE_KEY_FUNCTION (for keys()/iter_keys()): the caller's key from the key in
    Redis. The namespace may hold ':' itself, so it goes first; then ``django:<version>:``."""
    return key.removeprefix(settings.CACHE_NAMESPACE).split(":", 2)[2]


class Client(DefaultClient):
    """django-redis's client, but ``clear()`` deletes only this cache's keys (SCAN + UNLINK in
    batches) instead of FLUSHDB, which would also wipe the key families and other apps' keys, and
    ``keys()`` walks them with SCAN instead of KEYS (which blocks Redis on a large database and
    is refused to the app's ACL user)."""

    def keys(self, search: str, version: int | None = None, client=None) -> list[str]:
        if client is None:
            client = self.get_client(write=False)
        try:
            return list(self.iter_keys(search, itersize=BATCH, client=client, version=version))
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=client) from exc

    def clear(self, client=None) -> None:
        if client is None:
            client = self.get_client(write=True)
        try:
            batch = []
            for key in client.scan_iter(match=glob_escape(self._backend.key_prefix) + ":*", count=BATCH):
                batch.append(key)
                if len(batch) >= BATCH:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=client) from exc
