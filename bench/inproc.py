"""CPU per request inside one process, no HTTP: the WSGI handler called in a loop.

bench/run.py starts this script once per settings module (the bare floor, bench/bare.py, and the
real app against the running bench stack) and alternates them; each run prints the median CPU
time (``time.process_time``, so another process on the core does not count) per request of every
path, over batches that cycle through the paths, and the Python function calls one request makes
(builtins included, counted with ``sys.setprofile``): a figure the machine's noise cannot move.

    python bench/inproc.py --token T --batches 7 --per-batch 300 /api/bench/floor /api/me/coins ...
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def environ(path: str, token: str) -> dict:
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1", "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_ACCEPT": "*/*", "HTTP_USER_AGENT": "bench-inproc",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }


def count_calls(request, repeat: int = 20) -> int:
    """Function calls (Python and builtin) per request, the median of ``repeat`` requests."""
    counts = []
    for _ in range(repeat):
        seen = 0

        def profile(frame, event, arg):
            nonlocal seen
            if event in ("call", "c_call"):
                seen += 1

        sys.setprofile(profile)
        try:
            request()
        finally:
            sys.setprofile(None)
        counts.append(seen)
    return int(statistics.median(counts))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--per-batch", type=int, default=300)
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    statuses: list[str] = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def call(path: str) -> None:
        body = application(environ(path, args.token), start_response)
        b"".join(body)
        body.close()  # request_finished, as under gunicorn

    for path in args.paths:  # warm: connections, caches, the first-request imports
        for _ in range(20):
            call(path)
        if not statuses[-1].startswith("200"):
            raise SystemExit(f"{path} answered {statuses[-1]} under {os.environ['DJANGO_SETTINGS_MODULE']}")
    samples: dict[str, list[float]] = {path: [] for path in args.paths}
    for _ in range(args.batches):
        for path in args.paths:
            started = time.process_time()
            for _ in range(args.per_batch):
                call(path)
            samples[path].append((time.process_time() - started) / args.per_batch * 1e6)
    calls = {path: count_calls(lambda path=path: call(path)) for path in args.paths}
    print("INPROC_JSON " + json.dumps({path: round(statistics.median(v), 1) for path, v in samples.items()}))
    print("INPROC_CALLS " + json.dumps(calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
