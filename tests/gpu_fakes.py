"""Stand-ins for what a GPU node has and this machine lacks (there is no GPU here).

- ``nvidia-smi``: a script that answers the two queries the package makes
  (``--query-gpu=...`` and ``--query-compute-apps=...``) from a JSON state
  file, like a node of 8 H100s; a running fake server (below) shows up as a
  process holding memory on the GPUs it was given, until it exits.
- a CUDA vLLM interpreter: a ``python`` that answers the package's probe as a
  CUDA build of torch would (``tests/fake_cuda_vllm.py``), and as ``vllm
  serve`` records its command line and environment, then serves the OpenAI
  routes the engine uses (deterministic texts).

Both are real executables found the way the real ones are (PATH, the
``vllm_server_python`` setting), so the code under test runs unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
H100_MIB = 81559  # memory.total of an H100 80GB HBM3 as nvidia-smi reports it

_SMI = r"""#!{python}
import json, os, sys
state = json.loads(open({state!r}).read())
args = " ".join(sys.argv[1:])
gpus = [dict(g) for g in state["gpus"]]
apps = [dict(a) for a in state.get("apps", [])]
server = state.get("server_pid_file")
if server and os.path.exists(server):
    info = json.loads(open(server).read())
    try:
        os.kill(info["pid"], 0)
        alive = True
    except OSError:
        alive = False
    if alive:
        for g in gpus:
            if str(g["index"]) in info["visible"]:
                g["used"] += info.get("mib", 60000)
                apps.append({{"gpu_uuid": g["uuid"], "pid": info["pid"]}})
if "--query-gpu" in args:
    for g in gpus:
        print(f"{{g['index']}}, {{g['uuid']}}, {{g['name']}}, {{g['total']}}, "
              f"{{g['used']}}, {{state.get('driver', '580.95.05')}}")
elif "--query-compute-apps" in args:
    for a in apps:
        print(f"{{a['gpu_uuid']}}, {{a['pid']}}")
else:
    sys.exit("fake nvidia-smi: unexpected arguments " + args)
"""


def uuid(index: int) -> str:
    """A UUID whose first 8 hex digits tell the GPUs apart (0 -> 00000000,
    1 -> 11111111, ...), so short prefixes are unique as on real nodes."""
    return f"GPU-{index * 0x11111111:08x}-1111-2222-3333-44445555{index:04x}"


def node_state(
    gpus: int = 8,
    used: int = 500,
    other_jobs: dict[int, int] | None = None,
    driver: str = "580.95.05",
) -> dict:
    """A node of ``gpus`` H100s; ``other_jobs``: GPU index -> MiB another job
    (pid 4242) holds there."""
    other_jobs = other_jobs or {}
    return {
        "driver": driver,
        "gpus": [
            {
                "index": i,
                "uuid": uuid(i),
                "name": "NVIDIA H100 80GB HBM3",
                "total": H100_MIB,
                "used": used + other_jobs.get(i, 0),
            }
            for i in range(gpus)
        ],
        "apps": [{"gpu_uuid": uuid(i), "pid": 4242} for i in other_jobs],
    }


def install_nvidia_smi(folder: Path, state: dict) -> Path:
    """Write the state and a ``nvidia-smi`` reading it into ``folder``; put
    ``folder`` first on PATH to use it. Returns the state file."""
    folder.mkdir(parents=True, exist_ok=True)
    state_file = folder / "smi_state.json"
    state_file.write_text(json.dumps(state))
    script = folder / "nvidia-smi"
    script.write_text(_SMI.format(python=sys.executable, state=str(state_file)))
    script.chmod(0o755)
    return state_file


def install_cuda_python(
    folder: Path, record: Path, gpus: int = 8, cuda: bool = True, **extra: str
) -> Path:
    """A ``python`` that probes as a CUDA vLLM 0.23.0 on torch 2.11.0+cu130
    seeing ``gpus`` GPUs (``cuda=False``: a CUDA build that sees none), and
    runs a recording fake ``vllm serve``. ``extra``: more env for it."""
    folder.mkdir(parents=True, exist_ok=True)
    python = folder / "python"
    env = {
        "FAKE_VLLM_RECORD": str(record),
        "FAKE_VLLM_GPUS": str(gpus),
        "FAKE_VLLM_CUDA": "1" if cuda else "0",
        "PYTHONPATH": str(HERE),
        **extra,
    }
    exports = "".join(f"export {k}={json.dumps(v)}\n" for k, v in env.items())
    python.write_text(
        "#!/bin/sh\n"
        + exports
        + f'exec {sys.executable} {HERE / "fake_cuda_vllm.py"} "$@"\n'
    )
    python.chmod(0o755)
    return python


def path_with(folder: Path) -> str:
    return os.pathsep.join([str(folder), os.environ.get("PATH", "")])
