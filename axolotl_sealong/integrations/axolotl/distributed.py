"""Who samples what when Axolotl runs on several GPUs (torchrun / accelerate).

Every rank of a multi-GPU launch runs the plugin, and each would sample every
question. The policy, by engine:

- ``vllm`` and ``vllm_server``: one rank samples everything with tensor
  parallelism over the GPUs of its node (``vllm_tensor_parallel_size``
  defaults to all visible GPUs; ``vllm_server``: in the server that rank
  starts and stops); the other ranks wait, then read the results.
  One model split over all GPUs beats N copies fighting for memory, and vLLM
  batches the questions itself.
- ``openai``: rank 0 drives the servers (they do the work); the others wait.
- ``hf``: each rank takes the shard ``rows[rank::world]``, samples it on its
  own GPU (``cuda:LOCAL_RANK``) into ``out/rank{r}of{world}/`` (its own cache
  key, so each shard resumes on its own), and rank 0 merges the shards' files
  once every shard's marker exists. MBR scores each question on its own, so
  sharding does not change any result; given the question order
  (``merge_label_dirs(..., order=keys)``) the merged files are those one
  process writes from the same samples.

The plugin (``plugin.load_self_labeled``) asks ``sampling_role``: for
``shard`` (``hf`` under a multi-rank launch) it calls ``label_on_ranks``; for
``leader`` (``vllm``, ``vllm_server``, ``openai``) its file lock is the policy
(the first rank to take it labels, the others wait for it and read the rows).

Ranks find each other through files in ``out_dir`` (no ``torch.distributed``
needed), so ``out_dir`` must be on a filesystem all ranks see (on one node it
always is). Rank and world come from the launchers' environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from axolotl_sealong.core.config import LabelConfig

LOG = logging.getLogger(__name__)

DONE = ".sealong_done"
T = TypeVar("T")


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_info(env: Mapping[str, str] | None = None) -> RankInfo:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun, accelerate and deepspeed set them."""
    env = os.environ if env is None else env

    def read(*names: str, default: int) -> int:
        for name in names:
            if env.get(name, "").strip():
                return int(env[name])
        return default

    world = read("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", default=1)
    rank = read("RANK", "OMPI_COMM_WORLD_RANK", default=0)
    local = read("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", default=rank)
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return RankInfo(rank, world, local)


def sampling_role(engine: str, info: RankInfo) -> str:
    """``all`` (one process), ``leader`` (rank 0 samples) or ``shard`` (each rank)."""
    if info.world_size == 1:
        return "all"
    return "shard" if engine == "hf" else "leader"


def shard(items: Sequence[T], info: RankInfo) -> list[T]:
    """This rank's share: every world_size-th item, starting at its rank."""
    return list(items[info.rank :: info.world_size])


def shard_dir_name(rank: int, world_size: int) -> str:
    return f"rank{rank}of{world_size}"


def rank_settings(label_cfg: LabelConfig, info: RankInfo) -> LabelConfig:
    """One rank's sampling settings: its own GPU, ``cuda:LOCAL_RANK``, if any.

    An explicit device other than ``cuda`` is kept; without CUDA the rank
    samples on the CPU; a process that sees one GPU only (a launcher that sets
    CUDA_VISIBLE_DEVICES per rank) uses that one. The rank's current CUDA
    device is set too, so the embedder (which asks for plain ``cuda``) lands
    on the same GPU.
    """
    import torch

    if label_cfg.device not in (None, "cuda") or not torch.cuda.is_available():
        return label_cfg
    index = 0 if torch.cuda.device_count() == 1 else info.local_rank
    torch.cuda.set_device(index)
    return label_cfg.model_copy(update={"device": f"cuda:{index}"})


def mark_done(folder: Path, info: dict[str, Any] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (DONE + ".tmp")
    tmp.write_text(json.dumps(info or {}))
    tmp.replace(folder / DONE)


def wait_done(
    folders: Sequence[Path], timeout: float = 7 * 24 * 3600, poll: float = 0.5
) -> None:
    """Block until every folder has its done-marker (another rank finished)."""
    deadline = time.monotonic() + timeout
    missing = list(folders)
    while missing:
        missing = [f for f in missing if not (f / DONE).exists()]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"waited {timeout:.0f} s for {', '.join(map(str, missing))}: did "
                "the sampling rank fail? its log says why"
            )
        time.sleep(poll)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A shard's rows (none when the shard wrote no such file)."""
    from axolotl_sealong.common.rows import read_rows

    return read_rows(path) if path.exists() else []


def merge_in_order(parts: Sequence[Path], out: Path, order: Sequence[str]) -> None:
    """Shards' rows -> ``out`` in the order of one run over all questions.

    ``order`` is every question's key in the order of the rows the shards were
    cut from; each scored row gets its position there as ``index`` and the SFT
    and preference rows follow their question (``pipeline.row_sources``), so
    the files equal those of a single-process run over the same samples.
    """
    from collections import defaultdict, deque

    from axolotl_sealong.core.pipeline import (
        PREFERENCE_FILE,
        SCORED_FILE,
        SFT_FILE,
        row_sources,
        write_jsonl,
    )

    slots: dict[str, deque[int]] = defaultdict(deque)
    for position, key in enumerate(order):
        slots[key].append(position)
    merged: list[tuple[int, dict[str, Any], Any, Any]] = []
    for part in parts:
        scored = _read_jsonl(part / SCORED_FILE)
        sft = _read_jsonl(part / SFT_FILE)
        prefs = _read_jsonl(part / PREFERENCE_FILE)
        sft_of, pref_of = row_sources(scored)
        if len(sft_of) != len(sft) or len(pref_of) != len(prefs):
            raise ValueError(f"{part}: the rows do not match its {SCORED_FILE}")
        sft_by = dict(zip(sft_of, sft, strict=True))
        pref_by = dict(zip(pref_of, prefs, strict=True))
        for i, row in enumerate(scored):
            if not slots[row["key"]]:
                raise ValueError(f"{part}: question {row['key']} is not in the order")
            position = slots[row["key"]].popleft()
            merged.append(
                (position, {**row, "index": position}, sft_by.get(i), pref_by.get(i))
            )
    merged.sort(key=lambda m: m[0])
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / SFT_FILE, [m[2] for m in merged if m[2] is not None])
    write_jsonl(out / PREFERENCE_FILE, [m[3] for m in merged if m[3] is not None])
    write_jsonl(out / SCORED_FILE, [m[1] for m in merged])


def merge_label_dirs(parts: Sequence[Path], out: Path, order: Sequence[str]) -> None:
    """Shards of ``pipeline.label`` -> one folder, as if labeled in one run.

    Rows are put in the order of ``order`` (question keys; see
    ``merge_in_order``). ``diagnostics.json``, written last, sums the counts
    and recomputes the SubEM table over all questions.
    """
    from axolotl_sealong.core.diagnostics import subem_diagnostics
    from axolotl_sealong.core.pipeline import (
        DIAGNOSTICS_FILE,
        SCORED_FILE,
    )

    merge_in_order(parts, out, order)
    counts: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for part in parts:
        diag = json.loads((part / DIAGNOSTICS_FILE).read_text())
        for key, value in diag.get("counts", {}).items():
            counts[key] = counts.get(key, 0) + int(value)
        for key, value in diag.get("seconds", {}).items():
            seconds[key] = max(seconds.get(key, 0.0), float(value))
    scored = _read_jsonl(out / SCORED_FILE)
    first = json.loads((parts[0] / DIAGNOSTICS_FILE).read_text())
    diagnostics = {
        **first,
        "counts": counts,
        "subem": subem_diagnostics(scored),
        "seconds": seconds,  # the slowest shard's
        "shards": [str(p) for p in parts],
    }
    tmp = out / (DIAGNOSTICS_FILE + ".tmp")
    tmp.write_text(json.dumps(diagnostics, indent=2))
    tmp.replace(out / DIAGNOSTICS_FILE)


def label_on_ranks(
    out_dir: Path,
    run: Callable[[RankInfo, Path], Any],
    merge: Callable[[Sequence[Path], Path], None],
    info: RankInfo | None = None,
    timeout: float = 7 * 24 * 3600,
) -> Path:
    """The ``shard`` policy: each rank labels its shard, rank 0 merges them.

    ``run(info, part)`` labels ``shard(rows, info)`` into ``part`` (and should
    sample on ``cuda:{info.local_rank}``); ``part`` is
    ``out_dir/rank{r}of{world}``. ``merge`` joins the shards into ``out_dir``
    (``merge_label_dirs`` for ``pipeline.label``'s files). Every rank returns
    only when ``out_dir`` holds the complete result. The markers make a rerun
    wait again: the pipeline's cache makes that rerun cheap. A shard marker
    left in ``out_dir`` by an interrupted launch of the same world size may be
    merged before its rank redoes the shard: the same questions, whose samples
    that rank would read back from its cache.
    """
    info = info or rank_info()
    out_dir = Path(out_dir)
    marker = out_dir / DONE
    if info.is_main and marker.exists():
        marker.unlink()  # a fresh run: the others must wait for this one
    # the world size is in the name: a shard left by a launch with another world
    # size covers other questions and must not be merged
    parts = [
        out_dir / shard_dir_name(r, info.world_size) for r in range(info.world_size)
    ]
    mine = parts[info.rank]
    if (mine / DONE).exists():
        (mine / DONE).unlink()
    LOG.info("rank %d samples its shard of 1/%d", info.rank, info.world_size)
    run(info, mine)
    mark_done(mine)
    if info.is_main:
        wait_done(parts, timeout)
        merge(parts, out_dir)
        mark_done(out_dir, {"ranks": info.world_size})
    else:
        time.sleep(1.0)
        wait_done([out_dir], timeout)
    return out_dir
