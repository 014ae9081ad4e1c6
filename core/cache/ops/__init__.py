"""Operator tools for the cache, one module per command concern: ``flush``, ``warm``, ``stats``,
``verify`` and ``keytable`` (the README's key table). Everything works from the registry alone.

Every walk over keys is ``SCAN`` with the family's pattern (behind the namespace prefix), never
``KEYS``; deletes are ``UNLINK`` in batches, never ``FLUSHDB``/``FLUSHALL``, so a Redis shared with
other apps keeps their keys.
"""
