"""How Redis addresses in settings (REDIS_SENTINELS, REDIS_CLUSTER_NODES) are read."""

import re

import pytest

from core.cache.client import parse_host_ports


def test_host_port_pairs_are_read_with_ipv6_in_brackets():
    entries = [" redis-1:26379", "10.0.0.2:7000 ", "[::1]:6379"]
    assert parse_host_ports(entries, setting="S") == [("redis-1", 26379), ("10.0.0.2", 7000), ("::1", 6379)]


@pytest.mark.parametrize("entry", ["no-port", "host:", ":6379", "[]:6379", "host:abc", "host:0", "host:65536", ""])
def test_a_bad_entry_is_named_with_its_setting(entry):
    with pytest.raises(ValueError, match="^" + re.escape(f"REDIS_CLUSTER_NODES entry {entry!r} is not host:port") + "$"):
        parse_host_ports(["ok:1", entry], setting="REDIS_CLUSTER_NODES")
