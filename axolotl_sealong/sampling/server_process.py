"""The managed server's process: start, wait until ready, stop; never left behind.

``ManagedServer`` runs one server process group on a loopback port (a short
wrapper first, so the server dies with this process), waits for its ready
routes, and stops the whole group (SIGTERM, then SIGKILL); a server that dies
or never becomes ready is a ``ServerFailed`` that names its log and quotes its
errors (``log_excerpt``). Also the ports: a free one, or a set one checked.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from axolotl_sealong.sampling.server_args import setting_name

LOG = logging.getLogger(__name__)

TAIL_LINES = 12

# Run by the server's interpreter before vLLM: ask the kernel to SIGTERM the
# server if the process that started it dies (even by SIGKILL), then become
# the server (exec keeps that setting). A parent that is already gone: exit.
_WRAPPER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(os.environ.pop('SEALONG_PARENT_PID', os.getppid())):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message quotes its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int) -> None:
    """A set ``vllm_server_port`` that something already listens on: say so now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise ValueError(
                f"{setting_name('vllm_server_port')} = {port}: port {port} on "
                f"127.0.0.1 is in use ({err.strerror}): stop what listens there, "
                "choose another port, or leave the setting unset to get a free one"
            ) from None


# -- the process ----------------------------------------------------------------------


# "RuntimeError: ...", "vllm...EngineDeadError: ...", argparse's "error: ..."
_ERROR_LINE = re.compile(r"\b[\w.]*(Error|Exception): |\berror: ")
# vLLM's prefix: "(EngineCore pid=1) ERROR 11-26 00:36:03 [core.py:1512] "
_VLLM_PREFIX = re.compile(r"^(\(\w+ pid=\d+\) )?(\w+) [\d-]+ [\d:]+ \[[^\]]*\] ")
_START_MARK = "=== "


def log_excerpt(path: Path, tail: int = TAIL_LINES, errors: int = 6) -> str:
    """The log's distinct error messages, then its last lines.

    vLLM's root cause often sits well above the end of its log: a dying
    server adds tracebacks of its other processes and shutdown noise.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    lines = text.rstrip().splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith(_START_MARK)]
    lines = lines[starts[-1] + 1 :] if starts else lines  # this start only
    if not lines:
        return "(empty log)"
    found: list[str] = []
    for line in lines[-5000:]:
        prefix = _VLLM_PREFIX.match(line)
        if prefix and prefix.group(2) not in ("ERROR", "CRITICAL"):
            continue  # vLLM's warnings may quote error names
        message = line[prefix.end() :].strip() if prefix else line.strip()
        if _ERROR_LINE.search(message) and message not in found:
            found.append(message)
    last = lines[-tail:]
    if not found:
        return "\n".join(last)
    return "\n".join(["error messages:", *found[:errors], "last lines:", *last])


class ManagedServer:
    """One server process group: start, wait until ready, stop; never left behind.

    ``argv`` is the interpreter and its arguments (``[python, "-m", module,
    ...]``); a short wrapper runs first so the server dies with this process.
    The process gets its own session, so a Ctrl-C in the terminal reaches
    only us and we stop it in order. While it runs, a SIGTERM to this process
    (a job scheduler, a launcher) raises SystemExit so that cleanup runs, and
    an atexit hook stops it on any other exit.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 1800.0,
        grace: float = 30.0,
        ready_routes: tuple[str, ...] = ("/health", "/v1/models"),
        state_path: Path | None = None,
        what: str = "vLLM server",
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.log_path = Path(log_path).absolute()
        self.env = dict(os.environ if env is None else env)
        self.start_timeout = start_timeout
        self.grace = grace
        self.ready_routes = ready_routes
        self.state_path = state_path
        self.what = what
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.pids: set[int] = set()
        self._old_sigterm: Any = None
        self._stopped_by_us = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until every ready route answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        env["SEALONG_PARENT_PID"] = str(os.getpid())
        python, rest = self.argv[0], self.argv[1:]
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            header = f"\n{_START_MARK}{stamp} sealong starts: {shlex.join(self.argv)}\n"
            log.write(header.encode())
            log.flush()
            self.proc = subprocess.Popen(
                [python, "-c", _WRAPPER, *rest],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group and session
            )
        self.leader = self.proc.pid
        self.pids = {self.proc.pid}
        self._guard()
        self._write_state("starting")
        LOG.info(
            "%s: started pid %d on %s, log %s",
            self.what,
            self.proc.pid,
            self.url,
            self.log_path,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self._collect_pids()  # its workers exist now; a crash would orphan them
        self._write_state("ready")

    def _wait_ready(self) -> None:
        import httpx

        assert self.proc is not None
        t0 = time.monotonic()
        pending = list(self.ready_routes)
        last_note = t0
        while pending:
            code = self.proc.poll()
            if code is not None:
                raise ServerFailed(
                    self._failure(f"exited with code {code} before it was ready")
                )
            try:
                resp = httpx.get(self.url + pending[0], timeout=5.0)
                if resp.status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            now = time.monotonic()
            if now - t0 > self.start_timeout:
                raise ServerFailed(
                    self._failure(
                        f"was not ready within {self.start_timeout:g} s "
                        "(sealong_vllm_server_start_timeout)"
                    )
                )
            if now - last_note > 60:
                LOG.info("%s: waiting for %s (%.0f s)", self.what, pending[0], now - t0)
                last_note = now
            time.sleep(1.0)
        LOG.info("%s: ready after %.1f s", self.what, time.monotonic() - t0)

    def failure(self) -> str | None:
        """Why the server is unusable (it exited), or None while it runs."""
        if self.proc is None or self._stopped_by_us:
            return None
        code = self.proc.poll()
        return None if code is None else f"exited with code {code}"

    def _failure(self, what: str) -> str:
        return (
            f"the {self.what} {what}; its log is {self.log_path}, last lines:\n"
            f"{log_excerpt(self.log_path)}"
        )

    def describe_failure(self) -> str | None:
        """An error message quoting the log if the server died, else None."""
        reason = self.failure()
        return None if reason is None else self._failure(reason)

    def _collect_pids(self) -> None:
        """The server and its workers (vLLM's engine core, TP workers)."""
        if self.proc is None:
            return
        try:
            import psutil

            parent = psutil.Process(self.proc.pid)
            self.pids |= {p.pid for p in parent.children(recursive=True)}
        except Exception:  # psutil missing, or the process is already gone
            pass

    def _group_alive(self, pgid: int) -> bool:
        try:
            import psutil
        except ImportError:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return False
            return True
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                if (
                    os.getpgid(proc.pid) == pgid
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    return True
        return False

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after ``grace`` s; waits until all are gone."""
        proc = self.proc
        if proc is None:
            return
        self._stopped_by_us = True
        self._collect_pids()
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            LOG.warning(
                "%s: no exit %.0f s after SIGTERM: SIGKILL", self.what, self.grace
            )
        # the leader may be gone while workers linger: the whole group goes
        deadline = time.monotonic() + self.grace
        while self._group_alive(pgid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
        self.proc = None
        self._unguard()
        self._write_state("stopped", exit_code=proc.returncode)
        LOG.info("%s: stopped pid %d in %.1f s", self.what, pgid, time.monotonic() - t0)

    # -- never leave it running ------------------------------------------------------

    def _guard(self) -> None:
        atexit.register(self.stop)
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)

    def _unguard(self) -> None:
        atexit.unregister(self.stop)
        if self._old_sigterm is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def _write_state(self, state: str, **extra: Any) -> None:
        if self.state_path is None:
            return
        info = {
            "state": state,
            "pid": self.leader,
            "pids": sorted(self.pids),
            "port": self.port,
            "url": self.url,
            "log": str(self.log_path),
            "argv": self.argv,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.state_path)


def _sigterm_to_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
