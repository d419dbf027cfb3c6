"""The global batch a launch really trains with, logged when training starts.

A recipe's batch is per process: ``micro_batch_size`` x
``gradient_accumulation_steps``. ``accelerate launch`` (what ``axolotl train``
runs) starts one process per visible GPU, so a one-GPU recipe (1 x 64, the
paper's 64 pairs per update) started on an 8-GPU node trains with 512 pairs per
update and an eighth of the optimizer steps, and nothing says so. The plugin's
callback logs ``global batch = ranks x micro_batch_size x
gradient_accumulation_steps = N`` from the trainer's own arguments when training
begins, and warns with both fixes when N differs from the recipe's
``sealong_global_batch_size``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

LOG = logging.getLogger("axolotl_sealong")


@dataclass(frozen=True)
class GlobalBatch:
    """How many rows one optimizer step sees, and where the factors come from."""

    world_size: int  # processes of the launch
    model_parallel: int  # context_parallel_size x tensor_parallel_size
    gpus_per_process: int  # > 1: one process over several GPUs (DataParallel)
    micro_batch_size: int
    gradient_accumulation_steps: int

    @property
    def ranks(self) -> int:
        """Data-parallel ranks: processes that see different rows (Axolotl's
        ``normalize_config``: world size // context parallel // tensor parallel)."""
        return max(1, self.world_size // self.model_parallel)

    @property
    def per_update(self) -> int:
        return (
            self.ranks
            * self.gpus_per_process
            * self.micro_batch_size
            * self.gradient_accumulation_steps
        )

    def formula(self) -> str:
        dp = "" if self.gpus_per_process == 1 else f" x {self.gpus_per_process} GPUs"
        mp = (
            f" (world size {self.world_size} / context x tensor parallel "
            f"{self.model_parallel})"
            if self.model_parallel > 1
            else ""
        )
        return (
            f"global batch = {_count(self.ranks, 'rank')}{mp}{dp} x "
            f"micro_batch_size {self.micro_batch_size} x "
            f"gradient_accumulation_steps {self.gradient_accumulation_steps} = "
            f"{self.per_update}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def global_batch(args: Any, cfg: Any) -> GlobalBatch:
    """From a ``TrainingArguments`` (what the trainer uses) and Axolotl's cfg."""
    per_device = int(args.per_device_train_batch_size)
    return GlobalBatch(
        world_size=int(args.world_size),
        model_parallel=int(cfg.get("context_parallel_size") or 1)
        * int(cfg.get("tensor_parallel_size") or 1),
        # train_batch_size = per device x n_gpu: > per device when one process
        # drives several GPUs (transformers wraps the model in DataParallel)
        gpus_per_process=max(1, int(args.train_batch_size) // max(1, per_device)),
        micro_batch_size=per_device,
        gradient_accumulation_steps=int(args.gradient_accumulation_steps),
    )


def mismatch_message(batch: GlobalBatch, target: int) -> str | None:
    """None when ``batch`` gives ``target`` rows per update, else what to do."""
    got = batch.per_update
    if got == target:
        return None
    per_rank = batch.gpus_per_process * batch.micro_batch_size
    fixes = []
    # one process per GPU, as accelerate launches when each sees one GPU
    per_gpu = batch.micro_batch_size * batch.gradient_accumulation_steps
    if target % per_gpu == 0:
        gpus = target // per_gpu * batch.model_parallel
        devices = ",".join(str(i) for i in range(gpus))
        how = f"CUDA_VISIBLE_DEVICES={devices} axolotl train RECIPE.yml"
        if gpus > 1:
            how += f", or axolotl train RECIPE.yml -- --num_processes {gpus}"
        fixes.append(f"run on {gpus} GPU{'s' if gpus > 1 else ''} ({how})")
    if target % (batch.ranks * per_rank) == 0:
        steps = target // (batch.ranks * per_rank)
        fixes.append(
            f"set gradient_accumulation_steps: {steps} for "
            f"{_count(batch.ranks, 'rank')}"
        )
    fix = (
        "; or ".join(fixes)
        if fixes
        else (
            f"no whole number of GPUs or accumulation steps gives {target}: change "
            "micro_batch_size or sealong_global_batch_size"
        )
    )
    ratio = (
        f"{got // target}x the rows per optimizer step and 1/{got // target} of "
        "the steps"
        if got > target and got % target == 0
        else f"{got} instead of {target} rows per optimizer step"
    )
    return (
        f"sealong: {batch.formula()}, but this recipe is meant for "
        f"sealong_global_batch_size: {target} ({ratio}). Fix: {fix}."
    )


class GlobalBatchCallback(TrainerCallback):
    """Logs the global batch at train begin; warns when it is not the recipe's."""

    def __init__(self, target: int | None, cfg: Any) -> None:
        self.target = target
        self.cfg = cfg
        self.batch: GlobalBatch | None = None
        self.warning: str | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        self.batch = global_batch(args, self.cfg)
        self.warning = (
            mismatch_message(self.batch, self.target) if self.target else None
        )
        if not state.is_world_process_zero:
            return control
        LOG.info("sealong: %s", self.batch.formula())
        if self.warning:
            border = "!" * 79
            LOG.warning("\n%s\n%s\n%s", border, self.warning, border)
        return control
