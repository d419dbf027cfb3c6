"""The training stage's probe: an Axolotl plugin that records what the run did.

Listed after ``axolotl_sealong.SeaLongPlugin`` in the GPU check's training
recipe (``gpu_train.py``), it changes nothing in the run. From inside the
training process it writes ``<output_dir>/sealong_train_probe.json`` after
every step and once more at exit (also after an exception such as an
out-of-memory error): the trainer class, the attention implementation the
loaded model uses, the tokenized row lengths the trainer got, the versions of
the packages that trained, and per step its seconds (the device synchronised
at both ends) and peak GPU memory (``torch.cuda.max_memory_allocated``, reset
when training begins and at every step).
"""

from __future__ import annotations

import atexit
import json
import logging
import time
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from axolotl_sealong.bench.gpu_train import PROBE_FILE
from axolotl_sealong.bench.wheels import installed_version

LOG = logging.getLogger("axolotl_sealong")
VERSIONS = (
    "axolotl",
    "trl",
    "peft",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "pydantic",
    "pyarrow",
    "pandas",
    "numba",
)
GIB = 2**30


def package_versions() -> dict[str, str | None]:
    """Installed versions (None: not installed, e.g. numba's stand-in)."""
    return {name: installed_version(name) for name in VERSIONS}


def _cuda() -> Any:
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def _lengths(dataset: Any) -> list[dict[str, int]]:
    """Tokens per row as the trainer will see them (TRL's tokenized columns)."""
    if dataset is None:
        return []
    names = getattr(dataset, "column_names", None) or []
    cols = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
    if not all(c in names for c in cols[1:]):
        return []
    rows = []
    for row in dataset:
        entry = {c.replace("_input_ids", ""): len(row[c]) for c in cols if c in names}
        rows.append(entry)
    return rows


class _Recorder:
    """The probe's state, written as JSON on every change.

    ``peak_gib``: the most GPU memory allocated at once since training began
    (before that: since the process started), a step that failed included.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.peak = 0
        self.data: dict[str, Any] = {
            "pid": None,
            "versions": package_versions(),
            "steps": [],
            "finished": False,
        }

    def fold_peak(self) -> int:
        """The allocator's peak since its last reset, folded into ``peak``."""
        cuda = _cuda()
        if cuda is None:
            return 0
        current = int(cuda.max_memory_allocated())
        self.peak = max(self.peak, current)
        return current

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def write(self) -> None:
        if _cuda() is not None:
            self.fold_peak()
            self.data["peak_gib"] = round(self.peak / GIB, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)

    def write_at_exit(self) -> None:
        try:
            self.data["exited"] = True
            self.write()
        except Exception as err:  # noqa: BLE001 - never mask the run's own error
            LOG.warning("sealong train probe: could not write at exit: %s", err)


class ProbeCallback(TrainerCallback):
    """Seconds and peak memory of every optimizer step."""

    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder
        self._start = 0.0

    @staticmethod
    def _sync() -> None:
        cuda = _cuda()
        if cuda is not None:
            cuda.synchronize()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        rec = self.recorder
        cuda = _cuda()
        if cuda is not None:
            rec.data["peak_before_train_gib"] = round(rec.fold_peak() / GIB, 2)
            rec.data["allocated_at_train_begin_gib"] = round(
                cuda.memory_allocated() / GIB, 2
            )
            cuda.reset_peak_memory_stats()
            rec.peak = 0
        model = kw.get("model")
        rec.update(
            train_began=time.time(),
            gradient_checkpointing=getattr(model, "is_gradient_checkpointing", None),
        )

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._sync()
        cuda = _cuda()
        if cuda is not None:
            self.recorder.fold_peak()
            cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._sync()
        seconds = time.perf_counter() - self._start
        step: dict[str, Any] = {"step": state.global_step, "seconds": round(seconds, 3)}
        if _cuda() is not None:
            step["peak_gib"] = round(self.recorder.fold_peak() / GIB, 2)
        self.recorder.data["steps"].append(step)
        self.recorder.write()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any
    ) -> None:
        if logs and "train_runtime" in logs:
            self.recorder.data["trainer_metrics"] = {
                k: logs[k]
                for k in ("train_runtime", "train_steps_per_second", "train_loss")
                if k in logs
            }
            self.recorder.write()

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.recorder.update(finished=True, global_step=state.global_step)


class TrainProbePlugin(BasePlugin):
    """Records the run (``PROBE_FILE`` in ``output_dir``); changes nothing in it."""

    _recorder: _Recorder | None = None

    def _get(self, cfg: Any) -> _Recorder:
        if self._recorder is None:
            import os

            recorder = _Recorder(Path(cfg["output_dir"]) / PROBE_FILE)
            recorder.data["pid"] = os.getpid()
            atexit.register(recorder.write_at_exit)  # also after an OOM
            self._recorder = recorder
        return self._recorder

    def post_model_load(self, cfg: Any, model: Any) -> None:
        recorder = self._get(cfg)
        config = getattr(model, "config", None)
        cuda = _cuda()
        recorder.update(
            attn_implementation=getattr(config, "_attn_implementation", None),
            model_dtype=str(getattr(model, "dtype", "")).replace("torch.", ""),
            device=cuda.get_device_name(0) if cuda is not None else "cpu",
        )

    def post_trainer_create(self, cfg: Any, trainer: Any) -> None:
        from axolotl_sealong.integrations.axolotl.orpo import ResponseNLLORPOTrainer

        model = getattr(trainer, "model", None)
        trainable = (
            sum(p.numel() for p in model.parameters() if p.requires_grad)
            if model is not None
            else None
        )
        cls = type(trainer)
        self._get(cfg).update(
            trainer_class=cls.__name__,
            trainer_module=cls.__module__,
            response_nll_trainer=isinstance(trainer, ResponseNLLORPOTrainer),
            trainable_parameters=trainable,
            rows=_lengths(getattr(trainer, "train_dataset", None)),
        )

    def add_callbacks_post_trainer(self, cfg: Any, trainer: Any) -> list[Any]:
        return [ProbeCallback(self._get(cfg))]
