"""Benchmark and chaos harness (make bench, make chaos). Nothing here is imported in production."""
