"""The suite's fixtures and its private redis-server live in tests/support/fixtures.py, the two-host
pending-invalidation fixtures in tests/support/pending_hosts.py (pytest plugins, loaded here so every
test directory sees them)."""

pytest_plugins = ["tests.support.fixtures", "tests.support.pending_hosts"]
