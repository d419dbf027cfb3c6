"""What a vLLM process on this node may use: visible GPUs, their memory, its
allocator settings.

Three facts drive this module:

- ``nvidia-smi`` lists every GPU of the node whatever ``CUDA_VISIBLE_DEVICES``
  says, so each query here keeps only the visible ones (indices, which CUDA
  reads as nvidia-smi's ordinals, or UUIDs and their unique prefixes; the list
  ends at the first entry that names no GPU, as CUDA's does).
- vLLM 0.20-0.23 turn each ``CUDA_VISIBLE_DEVICES`` entry into an index with
  ``int()`` (``platforms/interface.py``, ``device_id_to_physical_device_id``;
  0.34 also takes UUIDs), so a server gets indices, with
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that CUDA and NVML agree on them.
- Every ``axolotl`` command sets ``PYTORCH_ALLOC_CONF=expandable_segments:True``
  (torch >= 2.9). vLLM's custom all-reduce cannot share expandable-segment
  memory over CUDA IPC: a tensor-parallel server can die right after CUDA
  graph capture (vllm-project/vllm #42609, #49101, #56180). vLLM processes get
  the allocator settings without that option (the rest kept).

Nothing here creates a CUDA context: GPUs are read from the driver's tool.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

LOG = logging.getLogger(__name__)

# torch reads them in this order (the first set one wins)
ALLOC_CONF_VARS = (
    "PYTORCH_ALLOC_CONF",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_HIP_ALLOC_CONF",
)
EXPANDABLE = "expandable_segments"
VISIBLE_VAR = "CUDA_VISIBLE_DEVICES"


def without_expandable_segments(
    env: Mapping[str, str],
) -> tuple[dict[str, str], list[str]]:
    """A copy of ``env`` whose allocator settings lack ``expandable_segments``.

    Every other option of the value is kept (``max_split_size_mb:512`` stays);
    a variable left empty is removed. Returns the environment and the names of
    the variables that changed.
    """
    out = dict(env)
    changed = []
    for name in ALLOC_CONF_VARS:
        value = out.get(name)
        if value is None:
            continue
        fields = [f for f in value.split(",") if f.strip()]
        kept = [f for f in fields if f.split(":", 1)[0].strip() != EXPANDABLE]
        if len(kept) == len(fields):
            continue
        changed.append(name)
        if kept:
            out[name] = ",".join(kept)
        else:
            del out[name]
    return out, changed


def visible_entries(environ: Mapping[str, str]) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as a list of entries; None when it is unset.

    An empty value hides every GPU. Entries are indices (``"2"``), GPU UUIDs or
    their prefixes (``"GPU-8932f937"``) or MIG devices (``"MIG-..."``); the
    list ends before the first entry that is none of these (``0,2,-1,1`` is
    ``0,2``), as CUDA reads it.
    """
    value = environ.get(VISIBLE_VAR)
    if value is None:
        return None
    entries = []
    for raw in value.split(","):
        entry = raw.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class Gpu:
    """One GPU as ``nvidia-smi`` reports it (index = nvidia-smi's ordinal)."""

    index: int
    uuid: str
    name: str
    total_mib: int
    used_mib: int


@dataclass(frozen=True)
class GpuState:
    """The visible GPUs and the processes holding memory on them."""

    gpus: list[Gpu]
    pids: set[int] = field(default_factory=set)
    driver: str | None = None
    all_gpus: int = 0  # on the node, visible or not
    note: str | None = None  # why the filter could not apply (MIG)

    @property
    def used_mib(self) -> list[int]:
        return [g.used_mib for g in self.gpus]


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def _csv(text: str) -> list[list[str]]:
    rows = [ln for ln in text.splitlines() if ln.strip()]
    return [[c.strip() for c in ln.split(",")] for ln in rows]


def select_visible(
    gpus: list[Gpu], entries: list[str] | None
) -> tuple[list[Gpu], str | None]:
    """The GPUs ``entries`` make visible, in their order; and a note when the
    entries cannot be matched to nvidia-smi's GPUs (MIG devices)."""
    if entries is None:
        return list(gpus), None
    if any(e.startswith("MIG-") for e in entries):
        return list(gpus), (
            "CUDA_VISIBLE_DEVICES names MIG devices, which nvidia-smi's GPU list "
            "does not show: memory is read for the whole GPUs"
        )
    out: list[Gpu] = []
    for entry in entries:
        if entry.isdigit():
            match = [g for g in gpus if g.index == int(entry)]
        else:
            match = [g for g in gpus if g.uuid.startswith(entry)]
        if len(match) != 1 or match[0] in out:
            break  # CUDA stops at an entry that names no (new) device
        out.append(match[0])
    return out, None


def query_gpus(environ: Mapping[str, str], run: Runner = _run) -> GpuState | None:
    """The visible GPUs, their memory and the pids using them; None without a
    working ``nvidia-smi``."""
    try:
        listed = run(
            [
                "nvidia-smi",
                "--query-gpu=index,uuid,name,memory.total,memory.used,driver_version",
                "--format=csv,noheader,nounits",
            ]
        )
        apps = run(
            [
                "nvidia-smi",
                "--query-compute-apps=gpu_uuid,pid",
                "--format=csv,noheader,nounits",
            ]
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode or apps.returncode:
        return None
    gpus, driver = [], None
    for row in _csv(listed.stdout):
        if len(row) < 6 or not row[0].isdigit():
            continue
        try:
            total, used = int(float(row[3])), int(float(row[4]))
        except ValueError:
            continue
        gpus.append(Gpu(int(row[0]), row[1], row[2], total, used))
        driver = row[5]
    visible, note = select_visible(gpus, visible_entries(environ))
    uuids = {g.uuid for g in visible}
    pids = {
        int(row[1])
        for row in _csv(apps.stdout)
        if len(row) >= 2 and row[1].isdigit() and (note or row[0] in uuids)
    }
    return GpuState(visible, pids, driver, len(gpus), note)


def server_visible_devices(
    environ: Mapping[str, str], state: GpuState | None
) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` (and order) for a vLLM process, as indices.

    UUIDs become nvidia-smi indices with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
    (nvidia-smi's order), which vLLM 0.20-0.23 need; indices and an unset
    variable pass through. Without nvidia-smi nothing changes.
    """
    entries = visible_entries(environ)
    if entries is None or state is None or state.note:
        return {}
    if all(e.isdigit() for e in entries):
        return {}
    indices = ",".join(str(g.index) for g in state.gpus)
    return {VISIBLE_VAR: indices, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


GpuQuery = Callable[[], "GpuState | None"]


class GpuMemoryNotReleased(RuntimeError):
    """The server's GPU memory was still held when the wait ran out."""


def wait_gpu_memory_released(
    pids: set[int],
    before: list[int] | None,
    query: GpuQuery,
    timeout: float = 300.0,
    on_timeout: str = "error",
    slack_mib: int = 1024,
    poll: float = 1.0,
) -> float:
    """Block until no server process holds memory on a visible GPU and each
    visible GPU's use is back within ``slack_mib`` of ``before``.

    Containers often hide other processes' pids from nvidia-smi, hence the
    second test. Returns the seconds waited (0 without nvidia-smi: logged).
    When ``timeout`` passes: ``on_timeout`` "error" raises
    :class:`GpuMemoryNotReleased` naming the pids and the memory; "continue"
    logs a warning and returns.
    """
    start = time.monotonic()
    while True:
        state = query()
        if state is None:
            LOG.warning(
                "vllm server: no nvidia-smi, cannot check that GPU memory is free"
            )
            return 0.0
        used = state.used_mib
        lower = before is None or all(
            u <= b + slack_mib for u, b in zip(used, before, strict=False)
        )
        holders = state.pids & pids
        if not holders and lower:
            return time.monotonic() - start
        waited = time.monotonic() - start
        if waited > timeout:
            what = (
                f"GPU memory the vLLM server held is not free {waited:.0f} s after "
                f"it stopped (server pids still on a GPU: {sorted(holders) or 'none'}; "
                f"MiB used per visible GPU now {used}, before the server {before})"
            )
            if on_timeout == "continue":
                LOG.warning("vllm server: %s; going on as asked", what)
                return waited
            raise GpuMemoryNotReleased(
                f"{what}. Training would start short of memory. Check nvidia-smi "
                "for a leftover process and stop it, then rerun (finished "
                "questions are in the sample cache); or wait longer with "
                "sealong_vllm_server_gpu_release_timeout, or go on anyway with "
                "sealong_vllm_server_gpu_release_on_timeout: continue"
            )
        time.sleep(poll)
