"""A fake OpenAI-compatible server on 127.0.0.1, for fault tests only.

The real engine test runs against ``vllm serve`` (tests/vllm/). This stdlib
server exists to make the faults happen on cue: HTTP 500s, a hang, a server
that drops every connection ("dies"), a 400. It answers ``/v1/models`` and
``/v1/chat/completions`` / ``/v1/completions`` with deterministic texts made
from the request's seed. Loopback only.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    model: str = "fake-model"
    extra_models: tuple[str, ...] = ()  # also listed by /v1/models
    max_model_len: int | None = 4096
    fail_first: int = 0  # answer the first k completions with HTTP 500
    hang_after: int | None = None  # completions after this many hang
    die_after: int | None = None  # completions after this many drop the socket
    bad_request: bool = False  # HTTP 400 to every completion
    choices: int | None = None  # return this many choices instead of n
    completions: int = 0  # completion requests seen
    served: int = 0  # completions answered with 200
    payloads: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)  # Authorization headers seen
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sample_text(seed: int, index: int, prompt: Any) -> str:
    head = str(prompt)[:12]
    return f"sample {index} of seed {seed} for {head!r}. The answer is {seed % 7}."


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        b = self.behaviour
        if self.path.rstrip("/") != "/v1/models":
            self._send(404, {"error": "not found"})
            return
        cards: list[dict[str, Any]] = []
        for name in (b.model, *b.extra_models):
            card: dict[str, Any] = {"id": name, "object": "model"}
            if b.max_model_len:
                card["max_model_len"] = b.max_model_len
            cards.append(card)
        self._send(200, {"object": "list", "data": cards})

    def do_POST(self) -> None:
        b = self.behaviour
        length = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(length) or b"{}")
        with b.lock:
            b.completions += 1
            count = b.completions
            b.payloads.append(payload)
            b.auth.append(self.headers.get("Authorization", ""))
        if b.die_after is not None and count > b.die_after:
            self.close_connection = True  # no answer at all: a dead server
            return
        if b.hang_after is not None and count > b.hang_after:
            b.release.wait(30)
            self.close_connection = True
            return
        if count <= b.fail_first:
            self._send(500, {"error": "overloaded"})
            return
        if b.bad_request:
            self._send(400, {"error": "prompt too long"})
            return
        chat = self.path.endswith("/chat/completions")
        prompt = payload["messages"][0]["content"] if chat else payload["prompt"]
        n = b.choices if b.choices is not None else payload.get("n", 1)
        choices = []
        for i in range(n):
            text = sample_text(payload.get("seed", 0), i, prompt)
            if payload.get("model") not in (None, b.model):  # another served model
                text += f" ({payload['model']})"
            if chat:
                choices.append(
                    {"index": i, "message": {"role": "assistant", "content": text}}
                )
            else:
                choices.append({"index": i, "text": text})
        with b.lock:
            b.served += 1
        self._send(200, {"choices": choices, "model": payload.get("model")})


class FakeServer:
    """``with FakeServer(Behaviour(...)) as server: server.url`` -> .../v1"""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        handler = type("Handler", (_Handler,), {"behaviour": self.behaviour})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.behaviour.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
