"""What a key family's key holds in Redis: a JSON body and its ETag, readable with ``redis-cli GET``
(``{"etag":"<16 hex>","data":<body>}``), served on a hit without decoding the body."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

_HEAD = b'{"etag":"'
_MID = b'","data":'
_ETAG_LEN = 16
_BODY_START = len(_HEAD) + _ETAG_LEN + len(_MID)


@dataclass(frozen=True, slots=True)
class Payload:
    """A JSON response body and its ETag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, data: object) -> Payload:
        body = orjson.dumps(data)
        # SHA1, as Redis's own redis.sha1hex: a page amended inside Redis (append_to_page.lua) gets
        # the ETag a load of the same body gets here.
        return cls(body, hashlib.sha1(body).hexdigest()[:_ETAG_LEN])  # noqa: S324 (an ETag, not a secret)

    def data(self):
        return orjson.loads(self.body)

    def pack(self) -> bytes:
        return b"".join((_HEAD, self.etag.encode(), _MID, self.body, b"}"))

    @classmethod
    def unpack(cls, raw: bytes) -> Payload | None:
        if raw[: len(_HEAD)] != _HEAD or raw[_BODY_START - len(_MID) : _BODY_START] != _MID or raw[-1:] != b"}":
            return None
        return cls(raw[_BODY_START:-1], raw[len(_HEAD) : len(_HEAD) + _ETAG_LEN].decode())
