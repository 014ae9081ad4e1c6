"""`make run`'s last step: gunicorn in the foreground, and the "Ready. Try:" line once it answers.

The line is printed only when this gunicorn answers `/api/health/live`, never because some other
server happens to listen on the port: this script binds the address itself (a clear error names
the port and `BIND=` when it is taken) and hands that socket to gunicorn, so no other program can
take it while gunicorn checks the settings; the wait ends, silently, if gunicorn exits. Ctrl-C
reaches gunicorn (it is in the terminal's process group) and this script waits for it to stop; a
SIGTERM is passed on.

    python config/serve.py [--bind HOST:PORT] [--check] [gunicorn arguments ...]

--check only checks that the address is free (make run does so before migrating, so a taken port
fails at once, not after the demo data).
"""

import argparse
import errno
import json
import os
import runpy
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_LOGIN = {"email": "demo@example.com", "password": "demo-password-123"}
STARTUP_TIMEOUT = 120.0


def configured_bind() -> str:
    """The address config/gunicorn.conf.py works out (GUNICORN_BIND, environment or .env)."""
    return str(runpy.run_path(str(BASE_DIR / "config" / "gunicorn.conf.py"))["bind"])


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"make run: BIND must be HOST:PORT, got {bind!r}")
    return host.strip("[]"), int(port)


def client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to host."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def listen_on(host: str, port: int) -> socket.socket | None:
    """The address bound and listening, or None when another program holds it. This socket is the
    one gunicorn serves (``--bind fd://``): nothing can take the port between this check and the
    moment gunicorn, after checking the settings for seconds, starts answering."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    # As gunicorn binds: a port left in TIME_WAIT is free.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(2048)  # gunicorn's default backlog
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise SystemExit(f"make run: cannot bind {host}:{port}: {exc.strerror}") from exc
    return listener


def curl_line(base_url: str) -> str:
    token = (f"curl -s -X POST {base_url}/api/auth/token -H 'Content-Type: application/json' "
             f"-d '{json.dumps(DEMO_LOGIN, separators=(',', ':'))}' | "
             f"{shlex.quote(sys.executable)} -c 'import json,sys; print(json.load(sys.stdin)[\"access\"])'")
    return f'curl -s {base_url}/api/characters -H "Authorization: Bearer $({token})"'


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def cache_down(base_url: str) -> bool:
    """Whether /api/health says Redis does not answer (the API then serves from the database)."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/health", timeout=10) as response:
            return json.loads(response.read())["cache"]["status"] == "down"
    except urllib.error.HTTPError as exc:  # 503: the database is down; the body still says
        return json.loads(exc.read() or b"{}").get("cache", {}).get("status") == "down"
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return False


def announce_when_ready(server: subprocess.Popen, base_url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while server.poll() is None and time.monotonic() < deadline:
        if answers(f"{base_url}/api/health/live"):
            if server.poll() is None:
                print(f"\nReady. Try:\n  {curl_line(base_url)}\n", flush=True)
            # Without Redis everything answers, but the job worker gets nothing: say so once, here.
            if server.poll() is None and cache_down(base_url):
                print("make run: Redis does not answer (REDIS_URL, default redis://localhost:6379/0). The API\n"
                      "  answers from the database, but chat replies and generations wait (pending) for the\n"
                      "  job worker, which takes them from Redis. Start Redis (apt-get install redis-server)\n"
                      "  or set REDIS_URL; what waits is sent again a few minutes after it answers.",
                      file=sys.stderr, flush=True)
            return
        time.sleep(0.2)
    if server.poll() is None:
        print(f"make run: gunicorn did not answer {base_url}/api/health/live within {STARTUP_TIMEOUT:.0f} s",
              file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="", help="HOST:PORT (default: GUNICORN_BIND, environment or .env)")
    parser.add_argument("--check", action="store_true", help="only check that the address is free")
    args, gunicorn_args = parser.parse_known_args(argv)
    bind = args.bind or configured_bind()
    if bind.startswith(("unix:", "fd://")):
        raise SystemExit("make run: give BIND=HOST:PORT (a unix socket is for a proxy in front, not for curl)")
    host, port = split_bind(bind)
    listener = listen_on(host, port)
    if listener is None:
        print(f"make run: {host}:{port} is already taken by another program, so this server cannot start there.\n"
              f"  Stop that program, or choose a free address: make run BIND=127.0.0.1:{port + 1}",
              file=sys.stderr)
        return 1
    if args.check:
        listener.close()
        return 0

    base_url = f"http://{client_host(host)}:{port}"
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with listener:  # gunicorn has its own copy of the socket; this one is closed once it started
        server = subprocess.Popen([gunicorn, "config.wsgi:application", "-c", "config/gunicorn.conf.py",
                                   "--bind", f"fd://{listener.fileno()}", *gunicorn_args],
                                  cwd=BASE_DIR, pass_fds=(listener.fileno(),))

    # Ctrl-C goes to the whole foreground process group: gunicorn gets it itself and shuts down;
    # here it only means "wait for gunicorn". A SIGTERM (a supervisor, CI) is passed on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: server.send_signal(signal.SIGTERM))
    threading.Thread(target=announce_when_ready, args=(server, base_url), daemon=True).start()
    return server.wait()


if __name__ == "__main__":
    os.chdir(BASE_DIR)
    sys.exit(main(sys.argv[1:]))
