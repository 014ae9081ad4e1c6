"""What a key family's key holds in Redis: a JSON body and its ETag, readable with ``redis-cli GET``
(``{"etag":"<16 hex>","data":<body>}``), served on a hit without decoding the body. A family with
a version key (``family.Version``) stores the version the value was built under in front:
``{"version":"<16 hex>","etag":"<16 hex>","data":<body>}``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

_HEAD = b'{"etag":"'
_MID = b'","data":'
_ETAG_LEN = 16
_BODY_START = len(_HEAD) + _ETAG_LEN + len(_MID)
_VERSION_HEAD = b'{"version":"'
STAMP_LEN = 16  # a version is 16 hex characters (version.py)
_VERSION_END = len(_VERSION_HEAD) + STAMP_LEN
_STAMP_SKIP = _VERSION_END + 1  # '{"version":"<16>",' stands where '{' stands in an unstamped value


STAMPED_HEAD = _STAMP_SKIP  # how many bytes of a value name its version (``stamp_of``)


def stamp_of(head: bytes) -> bytes | None:
    """The version a value (or its first STAMPED_HEAD bytes) was built under; None if unstamped."""
    if head[: len(_VERSION_HEAD)] != _VERSION_HEAD or len(head) < _VERSION_END:
        return None
    return head[len(_VERSION_HEAD):_VERSION_END]


@dataclass(frozen=True, slots=True)
class Payload:
    """A JSON response body and its ETag; ``stamp``: the version it was built under, if any."""

    body: bytes
    etag: str
    stamp: bytes | None = None

    @classmethod
    def of(cls, data: object, *, stamp: bytes | None = None) -> Payload:
        body = orjson.dumps(data)
        # SHA1, as Redis's own redis.sha1hex: a page amended inside Redis (append_to_page.lua) gets
        # the ETag a load of the same body gets here.
        return cls(body, hashlib.sha1(body).hexdigest()[:_ETAG_LEN], stamp)  # noqa: S324 (an ETag, not a secret)

    def data(self):
        return orjson.loads(self.body)

    def pack(self) -> bytes:
        if self.stamp is None:
            return b"".join((_HEAD, self.etag.encode(), _MID, self.body, b"}"))
        return b"".join((_VERSION_HEAD, self.stamp, b'",', _HEAD[1:], self.etag.encode(), _MID, self.body, b"}"))

    @classmethod
    def unpack(cls, raw: bytes) -> Payload | None:
        at, stamp = 0, None
        if raw[: len(_HEAD)] != _HEAD:
            if raw[: len(_VERSION_HEAD)] != _VERSION_HEAD or raw[_VERSION_END:_STAMP_SKIP + 1] != b'",':
                return None
            at, stamp = _STAMP_SKIP, raw[len(_VERSION_HEAD):_VERSION_END]
            if raw[at + 1 : at + len(_HEAD)] != _HEAD[1:]:
                return None
        start = at + _BODY_START
        if raw[start - len(_MID) : start] != _MID or raw[-1:] != b"}":
            return None
        return cls(raw[start:-1], raw[at + len(_HEAD) : at + len(_HEAD) + _ETAG_LEN].decode(), stamp)
