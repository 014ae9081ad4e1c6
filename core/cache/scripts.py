"""The engine's Lua scripts: one ``.lua`` file per behaviour in ``lua/``, run by SHA.

A script's SHA1 is worked out here from its text, so a call sends ``EVALSHA`` and the script's
body travels only when Redis does not know it (``NOSCRIPT``: a first call, a restart, a failover to
a server that never saw it, a ``SCRIPT FLUSH``); it is then loaded and the call sent again. That
holds for a single call (``LuaScript.run``) and for every command of a batch (``client.pipelined``).
A new script is a new ``.lua`` file and one line below.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import redis
from redis.exceptions import NoScriptError

_DIR = Path(__file__).with_name("lua")
BY_SHA: dict[str, LuaScript] = {}


class LuaScript:
    __slots__ = ("name", "text", "sha")

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = (_DIR / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA1)
        BY_SHA[self.sha] = self

    def run(self, client: redis.Redis, keys: list[str], args: list[object]):
        """One call, loading the script first if Redis does not know it."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
        except NoScriptError:
            client.script_load(self.text)
            return client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[arg-type]

    def command(self, keys: list[str], args: list[object]) -> tuple[object, ...]:
        """The call as one command of a batch (``client.pipelined``)."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


STORE_IF_LEASED = LuaScript("store_if_leased")
RELEASE_LEASE = LuaScript("release_lease")
EXTEND_LEASE = LuaScript("extend_lease")
LEASE_IF_CACHED = LuaScript("lease_if_cached")
UNLINK_IF_UNCHANGED = LuaScript("unlink_if_unchanged")
LEASE_IF_PRESENT = LuaScript("lease_if_present")
APPEND_TO_PAGE = LuaScript("append_to_page")
VERSION_OF = LuaScript("version_of")
