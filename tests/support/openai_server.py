"""A local server speaking the subset of OpenAI's HTTP API the providers use, for tests and the
bench: ``POST /v1/chat/completions`` and ``POST /v1/images/generations``, with configurable delays
and failures. A real HTTP server on loopback (the SDK goes through its whole stack), not a mock.

In-process: ``server = ProviderServer(image_delay=5).start()``; ``server.base_url`` is what
OPENAI_BASE_URL takes. As a process (a worker in another process must reach it):
``python -m tests.support.openai_server --port 0 --image-delay 5 --chat-delay 2`` prints its base URL.
Behaviour can change while it runs: ``POST /_control`` with any of ``image_delay``,
``chat_delay``, ``fail_status`` and ``fail_count`` (the next N calls answer that status);
``GET /_requests`` lists the calls received (path, body, when).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "sk-local-test"


class _State:
    def __init__(self, *, image_delay: float, chat_delay: float, api_key: str) -> None:
        self.lock = threading.Lock()
        self.image_delay = image_delay
        self.chat_delay = chat_delay
        self.api_key = api_key
        self.fail_status = 500
        self.fail_count = 0
        self.requests: list[dict] = []

    def take_failure(self) -> int | None:
        with self.lock:
            if self.fail_count > 0:
                self.fail_count -= 1
                return self.fail_status
        return None


class _Handler(BaseHTTPRequestHandler):
    server_version = "local-openai/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: tests and the bench read their own output
        pass

    @property
    def state(self) -> _State:
        return self.server.state  # type: ignore[attr-defined]

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        if self.path == "/_requests":
            with self.state.lock:
                self._reply(200, {"requests": list(self.state.requests)})
            return
        self._reply(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        body = self._body()
        state = self.state
        if self.path == "/_control":
            with state.lock:
                for name in ("image_delay", "chat_delay", "fail_status", "fail_count"):
                    if name in body:
                        setattr(state, name, body[name])
            self._reply(200, {"ok": True})
            return
        if self.path not in ("/v1/chat/completions", "/v1/images/generations"):
            self._reply(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        with state.lock:
            state.requests.append({"path": self.path, "body": body, "at": time.time()})
        if self.headers.get("Authorization") != f"Bearer {state.api_key}":
            # As OpenAI words it: the key, masked, in the message.
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            masked = f"{given[:3]}{'*' * max(len(given) - 7, 0)}{given[-4:]}"
            self._reply(401, {"error": {"message": f"Incorrect API key provided: {masked}. You can find your API "
                                                  "key at https://platform.openai.com/account/api-keys.",
                                        "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        failure = state.take_failure()
        if failure is not None:
            self._reply(failure, {"error": {"message": f"injected failure {failure}", "type": "server_error"}})
            return
        if self.path == "/v1/chat/completions":
            time.sleep(state.chat_delay)
            self._reply(200, _completion(body))
        else:
            time.sleep(state.image_delay)
            self._reply(200, _image(body, self.server.server_address))


def _completion(body: dict) -> dict:
    messages = body.get("messages") or []
    system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    # Deterministic, and shows what the model was given: how many messages, the persona's first words.
    content = f"[{len(messages)} messages; persona: {' '.join(system.split()[:6])}] You said: {last}"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words = content.split()
    finish = "stop"
    if limit is not None and len(words) > limit:
        content, finish = " ".join(words[:limit]), "length"
    return {
        "id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": len(content.split()), "total_tokens": 1 + len(words)},
    }


def _image(body: dict, address) -> dict:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    host, port = address[:2]
    return {"created": int(time.time()), "data": [{"url": f"http://{host}:{port}/images/{digest}.png",
                                                   "revised_prompt": body.get("prompt")}]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that went away mid-answer (a worker killed with -9, a timeout) is expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ProviderServer:
    """The server on a free loopback port, in a thread of this process."""

    def __init__(self, *, image_delay: float = 0.0, chat_delay: float = 0.0, api_key: str = API_KEY,
                 port: int = 0) -> None:
        self.httpd = _Server(("127.0.0.1", port), _Handler)
        self.httpd.state = _State(image_delay=image_delay, chat_delay=chat_delay,  # type: ignore[attr-defined]
                                  api_key=api_key)
        self.api_key = api_key
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="local-openai", daemon=True)

    @property
    def state(self) -> _State:
        return self.httpd.state  # type: ignore[attr-defined]

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ProviderServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def control(self, **changes: object) -> None:
        with self.state.lock:
            for name, value in changes.items():
                setattr(self.state, name, value)

    def received(self, path: str | None = None) -> list[dict]:
        with self.state.lock:
            return [r for r in self.state.requests if path is None or r["path"] == path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--image-delay", type=float, default=0.0)
    parser.add_argument("--chat-delay", type=float, default=0.0)
    parser.add_argument("--api-key", default=API_KEY)
    args = parser.parse_args()
    server = ProviderServer(image_delay=args.image_delay, chat_delay=args.chat_delay, api_key=args.api_key,
                            port=args.port)
    print(server.base_url, flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
