"""CPU and wall time per request inside one process, no HTTP: the WSGI handler called in a loop.

bench/run.py starts this script once per Django (the bare floor, bench/bare.py; the plain
django-redis view, bench/plain.py; the real app against the running bench stack), keeps the three
up and drives them over stdin, one batch at a time, so the bare floor is measured right beside
every endpoint: a batch of the bare floor, one of the plain view, one of the endpoint, round after
round. Each batch reports CPU per request (``time.process_time``: another process on the core
does not count) and wall time per request (``time.perf_counter``: for a write, PostgreSQL's and
Redis' share as well). ``calls`` counts the Python function calls one request makes (builtins
included, with ``sys.setprofile``): a figure the machine's noise cannot move.

One JSON command per line on stdin, one JSON reply per line on stdout:

    {"op": "run", "requests": [["GET", "/api/me/coins", null, 0]], "n": 300}
      -> INPROC {"cpu_us": 231.4, "wall_us": 240.2, "statuses": {"200": 300}}
    {"op": "calls", "requests": [["GET", "/api/me/coins", null, 0]]}  -> INPROC {"calls": 783}

A request is [method, path, JSON body or null, index into --tokens-file]; a batch of ``n`` cycles
through its requests, and ``{n}`` in a body becomes a counter (each write its own content).

    python bench/inproc.py --tokens-file tokens.txt
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


def environ(method: str, path: str, body: bytes, token: str) -> dict:
    env = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1", "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_ACCEPT": "*/*", "HTTP_USER_AGENT": "bench-inproc",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    if body:
        env["CONTENT_TYPE"] = "application/json"
        env["CONTENT_LENGTH"] = str(len(body))
    return env


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


class Driver:
    def __init__(self, tokens: list[str]) -> None:
        from django.core.wsgi import get_wsgi_application

        self.application = get_wsgi_application()
        self.tokens = tokens or [""]
        self.counter = 0
        self.status = ""

    def _start_response(self, status, headers, exc_info=None):
        self.status = status

    def call(self, method: str, path: str, body: str | None, token: int) -> str:
        self.counter += 1
        raw = b"" if body is None else body.replace("{n}", str(self.counter)).encode()
        response = self.application(environ(method, path, raw, self.tokens[token % len(self.tokens)]),
                                     self._start_response)
        b"".join(response)
        response.close()  # request_finished, as under gunicorn
        return self.status.partition(" ")[0]

    def run(self, requests: list, n: int) -> dict:
        statuses: dict[str, int] = {}
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(n):
            status = self.call(*requests[i % len(requests)])
            statuses[status] = statuses.get(status, 0) + 1
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"cpu_us": round(cpu / n * 1e6, 1), "wall_us": round(wall / n * 1e6, 1), "statuses": statuses}

    def calls(self, requests: list) -> dict:
        return {"calls": count_calls(lambda: self.call(*requests[0]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens-file", help="one access token per line")
    args = parser.parse_args()
    tokens = Path(args.tokens_file).read_text().split() if args.tokens_file else []
    driver = Driver(tokens)
    if os.environ.get("BENCH_FANOUT_NO_VERSION"):
        # bench/fanout.py: the read as it was before version keys (no version key in the MGET).
        from core.cache.registry import FAMILIES

        for family in FAMILIES.values():
            object.__setattr__(family, "version", None)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        reply = driver.calls(command["requests"]) if command["op"] == "calls" else driver.run(command["requests"], command["n"])
        sys.stdout.write("INPROC " + json.dumps(reply) + "\n")  # the prefix: nothing else printed is a reply
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
