"""The HTTP/API plumbing every app shares: middleware, the cached-read lane, DRF settings
(parsers, negotiation, pagination, schema, throttling, exceptions) and the health and metrics
endpoints."""
