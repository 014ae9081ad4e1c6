"""The cache layer: key registry, resilient Redis access, read-through with leases, invalidation."""
