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


# --- the connection a thread keeps for its cached reads ---------------------------------------------


def _pool():
    from core.cache.client import redis_client

    return redis_client().connection_pool


def test_a_thread_reads_on_one_connection_it_keeps(redis_raw):
    from core.cache.client import read_command, redis_client

    redis_raw.set("k", b"v")
    pool = _pool()
    assert read_command(redis_client(), "GET", "k") == b"v"
    kept = {id(c) for c in pool._in_use_connections}
    for _ in range(20):
        assert read_command(redis_client(), "GET", "k") == b"v"
        assert {id(c) for c in pool._in_use_connections} == kept  # no checkout, no new connection
    assert len(kept) == 1


def test_a_thread_that_ends_gives_its_connection_back(redis_raw):
    import gc
    import threading

    from core.cache.client import read_command, redis_client

    pool = _pool()
    in_use = len(pool._in_use_connections)
    thread = threading.Thread(target=lambda: read_command(redis_client(), "GET", "k"))
    thread.start()
    thread.join()
    gc.collect()
    assert len(pool._in_use_connections) == in_use


def test_a_connection_the_server_closed_is_replaced_before_the_read(redis_raw):
    from core.cache.client import read_command, redis_client

    redis_raw.set("k", b"v")
    assert read_command(redis_client(), "GET", "k") == b"v"
    redis_raw.client_kill_filter(_type="normal", skipme=True)  # as a restart does to every client
    assert read_command(redis_client(), "GET", "k") == b"v"
