"""Test support: the processes tests run against (redis-server, Sentinel, Cluster, gunicorn), the
suite's fixtures (a pytest plugin, loaded by the root conftest) and helpers. Product code never
imports it (.importlinter)."""
