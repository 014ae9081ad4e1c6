"""The cache engine: key families, read-through with leases, invalidation after commit, and the
Redis topology behind them. Apps import ``core.cache.api`` only; every other module is the engine's own."""
