"""A stand-in server process for the lifecycle tests of ``ManagedServer``.

Run as ``python fake_server_proc.py PORT MODE``: a stdlib HTTP server on
127.0.0.1:PORT that answers ``/health`` and ``/v1/models`` like vLLM's, plus a
child process (as vLLM's engine core is), both in the caller's process group.
MODE changes one thing:

- ``ok``: serves until SIGTERM;
- ``stubborn``: ignores SIGTERM (and so does its child): only SIGKILL stops it;
- ``crash``: prints an error and exits before serving;
- ``never``: runs but never answers ``/health`` with 200.

Its pid and its child's pid are printed first, so tests can check that both
are gone after a stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            + (
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                if mode == "stubborn"
                else ""
            )
            + "time.sleep(600)",
        ]
    )
    print(f"fake server pid {os.getpid()} child {child.pid}", flush=True)
    if mode == "crash":
        print("ValueError: fake server: bad argument --no-such-flag", flush=True)
        child.kill()
        sys.exit(2)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/health" and mode != "never":
                body = b""
            elif self.path == "/v1/models" and mode != "never":
                body = json.dumps({"data": [{"id": "sealong"}]}).encode()
            else:
                self.send_response(503)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    if mode != "stubborn":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = HTTPServer(("127.0.0.1", port), Handler)
    print("fake server: serving", flush=True)
    try:
        server.serve_forever()
    finally:
        child.terminate()
        time.sleep(0.1)


if __name__ == "__main__":
    main()
