from datetime import datetime


def iso_utc(value: datetime | None) -> str | None:
    """A UTC timestamp as the API writes it everywhere: ISO 8601 ending in ``Z``."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")
