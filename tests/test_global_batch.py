"""The global batch is logged when training starts, and a launch that changes it
is warned about with the fix (one-GPU recipe on an 8-GPU node: 512, not 64)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from axolotl_sealong.integrations.axolotl.batch import (
    GlobalBatch,
    GlobalBatchCallback,
    mismatch_message,
)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _args(tmp_path: Path, accumulation: int) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=accumulation,
        use_cpu=True,
        report_to=[],
    )


def _begin(callback: Any, args: Any, caplog: pytest.LogCaptureFixture) -> str:
    from transformers import TrainerControl, TrainerState

    state = TrainerState()  # is_world_process_zero defaults to True
    with caplog.at_level(logging.INFO, logger="axolotl_sealong"):
        callback.on_train_begin(args, state, TrainerControl())
    return caplog.text


def test_one_gpu_recipe_on_eight_ranks_is_warned_with_both_fixes(
    tmp_path, monkeypatch, caplog
):
    """The paper's one-GPU recipe (1 x 64) under a launch of 8 processes. The
    world size is simulated (this machine runs one process): transformers'
    ``TrainingArguments.world_size``, which the callback reads, says 8."""
    from transformers import TrainingArguments

    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 8))
    args = _args(tmp_path, accumulation=64)
    callback = GlobalBatchCallback(64, {})
    log = _begin(callback, args, caplog)
    assert (
        "sealong: global batch = 8 ranks x micro_batch_size 1 x "
        "gradient_accumulation_steps 64 = 512" in log
    )
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert "sealong_global_batch_size: 64" in text
    assert "8x the rows per optimizer step and 1/8 of the steps" in text
    assert "run on 1 GPU (CUDA_VISIBLE_DEVICES=0 axolotl train RECIPE.yml)" in text
    assert "set gradient_accumulation_steps: 8 for 8 ranks" in text


def test_matching_batch_is_only_logged(tmp_path, monkeypatch, caplog):
    """The ZeRO-3 recipe as meant: 8 ranks (simulated) x 1 x 8 = 64."""
    from transformers import TrainingArguments

    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 8))
    log = _begin(GlobalBatchCallback(64, {}), _args(tmp_path, 8), caplog)
    assert "global batch = 8 ranks x micro_batch_size 1 x " in log
    assert "= 64" in log
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unset_target_is_only_logged(tmp_path, caplog):
    log = _begin(GlobalBatchCallback(None, {}), _args(tmp_path, 64), caplog)
    assert "global batch = 1 rank x micro_batch_size 1 x " in log
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_other_ranks_log_nothing(tmp_path, caplog):
    from transformers import TrainerControl, TrainerState

    callback = GlobalBatchCallback(64, {})
    state = TrainerState(is_world_process_zero=False)
    with caplog.at_level(logging.INFO, logger="axolotl_sealong"):
        callback.on_train_begin(_args(tmp_path, 8), state, TrainerControl())
    assert caplog.text == ""
    assert callback.warning is not None  # computed, just not printed 8 times


def test_counting_follows_axolotl():
    """Context/tensor parallel ranks share rows (Axolotl's normalize_config);
    one process over several GPUs (DataParallel) multiplies the batch."""
    cp = GlobalBatch(
        world_size=8,
        model_parallel=8,
        gpus_per_process=1,
        micro_batch_size=1,
        gradient_accumulation_steps=64,
    )
    assert cp.per_update == 64 and mismatch_message(cp, 64) is None
    assert "1 rank (world size 8 / context x tensor parallel 8)" in cp.formula()
    dp = GlobalBatch(
        world_size=1,
        model_parallel=1,
        gpus_per_process=8,
        micro_batch_size=1,
        gradient_accumulation_steps=64,
    )
    assert dp.per_update == 512
    message = mismatch_message(dp, 64) or ""
    assert "x 8 GPUs x micro_batch_size 1" in message
    assert "CUDA_VISIBLE_DEVICES=0 axolotl train" in message
    odd = GlobalBatch(3, 1, 1, 1, 5)  # 15; 64 is neither k x 5 nor 3 x k
    assert "no whole number of GPUs or accumulation steps gives 64" in (
        mismatch_message(odd, 64) or ""
    )
    small = GlobalBatch(1, 1, 1, 1, 8)  # the ZeRO-3 recipe on one GPU
    message = mismatch_message(small, 64) or ""
    assert "8 instead of 64 rows per optimizer step" in message
    assert "run on 8 GPUs (CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 axolotl" in message
    assert "-- --num_processes 8" in message
    assert "set gradient_accumulation_steps: 64 for 1 rank" in message
