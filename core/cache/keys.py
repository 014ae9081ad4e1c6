"""Key building: the contract's key names, with user-supplied parts made safe.

A part made only of characters from a small safe set (and not too long) is used as is; any
other part becomes ``~`` plus the SHA-256 of its UTF-8 bytes. ``~`` is outside the safe set,
so an encoded part never equals a raw one, and no part can hold ``:``, a glob character,
whitespace or unicode: a part cannot reach into another family or act as a pattern.
"""

import hashlib
import re

SAFE_PART = re.compile(r"[A-Za-z0-9._@+-]{1,100}\Z")
HASH_MARK = "~"


def key_part(value: object) -> str:
    text = str(value)
    if SAFE_PART.match(text):
        return text
    return HASH_MARK + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def normalize_email(email: str) -> str:
    return email.strip().lower()
