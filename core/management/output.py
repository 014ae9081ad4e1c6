"""Machine-readable output of the operator commands (`--json`): one JSON document on stdout."""

import json


def json_dumps(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)
