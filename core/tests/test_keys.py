"""core.cache.keys: user-supplied key parts are used as is only when safe, else hashed."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from core.cache.keys import HASH_MARK, key_part, normalize_email

# What a part may hold in Redis: no ':' (family separator), no glob characters, no whitespace,
# nothing outside printable ASCII.
PART_OK = re.compile(r"[A-Za-z0-9._@+~-]+\Z")
MAX_PART = 100

hostile = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("ab:*?[]\\ \t\n~.@+-_é\x00\u2028😀"), max_size=40),
    st.text(min_size=90, max_size=300),
    st.builds(lambda s: (s * 10_240)[:10_240], st.text(min_size=1, max_size=8)),
    st.integers(),
)


def _check_part(part: str) -> None:
    assert PART_OK.match(part), part
    assert part.isascii()
    assert len(part) <= MAX_PART


@given(hostile)
def test_every_part_is_short_plain_ascii_without_separator_or_glob(value):
    _check_part(key_part(value))


@given(hostile, hostile)
def test_distinct_inputs_never_share_a_part(a, b):
    if str(a) != str(b):
        assert key_part(a) != key_part(b)


@settings(max_examples=30)
@given(st.builds(lambda s: (s * 10_240)[:10_240], st.text(min_size=1, max_size=8)))
def test_ten_kilobyte_input_becomes_a_short_hash(value):
    part = key_part(value)
    assert part.startswith(HASH_MARK)
    assert len(part) == 65


def test_safe_parts_are_kept_readable():
    assert key_part("alice@example.com") == "alice@example.com"
    assert key_part(42) == "42"
    assert key_part("luna") == "luna"
    assert key_part("a" * 100) == "a" * 100


def test_a_safe_looking_input_never_equals_a_hashed_one():
    hashed = key_part("a:b")
    assert hashed.startswith(HASH_MARK)
    # The hash itself, fed back as input, is not safe ('~') and hashes again.
    assert key_part(hashed) != hashed


def test_hostile_examples_are_hashed():
    for value in ("*", "user:coins:1", "a b", "é", "[a]", "?", "a" * 101, "", "\x00", "~"):
        assert key_part(value).startswith(HASH_MARK), value


def test_normalize_email_lowercases_and_trims():
    assert normalize_email("  Alice@Example.COM \n") == "alice@example.com"
