"""The suite's fixtures and its private redis-server live in tests/support/fixtures.py (a pytest
plugin, loaded here so every test directory sees them)."""

pytest_plugins = ["tests.support.fixtures"]
