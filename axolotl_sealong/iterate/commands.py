"""The commands a round runs, as a user would type them, and what they leave.

``axolotl preprocess`` / ``axolotl train`` on a round's YAML, ``python -m
lm_eval`` on a round's model (its per-question scores read back from the
``--log_samples`` files), and the LoRA merge (in process: peft has no command
for it). Every subprocess's output goes to the terminal and to ``OUT/logs``.
"""

from __future__ import annotations

import glob
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axolotl_sealong.iterate.records import ModelRecord, TaskScores

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """lm-eval after every round (nothing when ``tasks`` is empty)."""

    tasks: tuple[str, ...] = ()
    model_args: str = ""
    args: tuple[str, ...] = ()
    metric: str = "sub_em"


def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_logged(cmd: list[str], log: Path, stage: str, resume_hint: str) -> None:
    """Run ``cmd``; its output (progress bars too) goes to the terminal and ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    LOG.info("stage %s: %s", stage, shlex.join(cmd))
    with log.open("wb") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n".encode())
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=run_env()
        )
        assert proc.stdout is not None
        while (
            chunk := proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else b""
        ):
            fh.write(chunk)
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
        code = proc.wait()
    if code:
        raise RuntimeError(
            f"stage {stage} failed (exit {code}): {shlex.join(cmd)}; its output is in "
            f"{log}. Finished stages are kept: rerun {resume_hint} to resume"
        )


def axolotl_cmd(sub: str, config: Path, launcher: str = "python") -> list[str]:
    cmd = [sys.executable, "-m", "axolotl.cli.main", sub, str(config)]
    if sub != "train" or launcher == "accelerate":
        return cmd
    if launcher == "auto":
        import torch

        if torch.cuda.is_available():
            return cmd
    # one process on a CPU (accelerate would only add start-up time)
    return [*cmd, "--launcher", "python"]


def lm_eval_cmd(
    model: Path, adapter: Path | None, out: Path, ev: EvalSettings
) -> list[str]:
    """``python -m lm_eval`` on a model folder (plus a LoRA adapter through peft=)."""
    from axolotl_sealong.integrations.lm_eval.discovery import lm_eval_argv

    model_args = f"pretrained={model}"
    if adapter is not None:
        model_args += f",peft={adapter}"
    if ev.model_args:
        model_args += f",{ev.model_args}"
    args = [
        "--model",
        "hf",
        "--model_args",
        model_args,
        "--tasks",
        ",".join(ev.tasks),
        *ev.args,
        "--log_samples",
        "--output_path",
        str(out),
    ]
    return [sys.executable, "-m", "lm_eval", *lm_eval_argv(args)]


def read_eval(out: Path, tasks: Sequence[str], metric: str) -> dict[str, TaskScores]:
    """Per-question scores from lm-eval's ``--log_samples`` files, per task.

    A group (e.g. ``longbench_sealong``) writes one file per sub-task; each is
    reported on its own. Rows are ordered by ``doc_id`` so runs pair up.
    """
    from axolotl_sealong.common.rows import read_rows

    files = sorted(glob.glob(str(out / "**" / "samples_*.jsonl"), recursive=True))
    latest: dict[str, str] = {}
    for path in files:  # samples_<task>_<timestamp>.jsonl; the newest wins
        task = Path(path).name[len("samples_") :].rsplit("_", 1)[0]
        latest[task] = path
    if not latest:
        raise RuntimeError(
            f"lm-eval wrote no samples_*.jsonl under {out} (tasks {', '.join(tasks)})"
        )
    result: dict[str, TaskScores] = {}
    for task, path in sorted(latest.items()):
        rows = sorted(read_rows(path), key=lambda r: r["doc_id"])
        if rows and metric not in rows[0]:
            raise RuntimeError(
                f"{path} has no per-question {metric!r}: its metrics are "
                f"{sorted(k for k in rows[0] if not k.startswith(('doc', 'arg')))}; "
                "pass --eval-metric with one of them"
            )
        result[task] = TaskScores(
            doc_ids=[r["doc_id"] for r in rows],
            scores=[float(r[metric]) for r in rows],
            output_tokens=[float(r.get("output_tokens", 0.0)) for r in rows],
            samples_file=path,
        )
    return result


def merge_adapter(
    base: Path, adapter: Path, dest: Path, dtype: str = "auto"
) -> ModelRecord:
    """Fold the LoRA into the weights: the next round samples from a plain folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter / "adapter_config.json").is_file():
        raise RuntimeError(f"no LoRA adapter in {adapter}: did axolotl train finish?")
    tmp = dest.with_name(dest.name + ".partial")
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    os.replace(tmp, dest)
    return ModelRecord(model=str(dest))
