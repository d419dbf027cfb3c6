"""`sealong eval` / `lm_eval` as subprocesses: `--model hf` on a tiny random Llama: the
slow half (models, end-to-end runs); the fast half is tests/test_eval_cli.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from eval_support import GROUP_TASKS
from test_eval_cli import REPO, _env


def test_hf_group_row(hf_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = hf_run
    (path,) = out.rglob("results_*.json")
    results = json.loads(path.read_text())["results"]
    group = results["longbench_sealong"]
    for metric in ("sub_em", "sub_em_extracted", "output_tokens"):
        task_means = [results[t][f"{metric},none"] for t in GROUP_TASKS]
        assert group[f"{metric},none"] == pytest.approx(sum(task_means) / 5)
    assert "longbench_sealong_narrativeqa" in results
    assert "sealong_synth" in results
    assert "Left truncation" not in proc.stderr  # the task fitted every prompt


def test_lm_eval_validate_with_include_path() -> None:
    from axolotl_sealong.integrations.lm_eval.discovery import task_dir

    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "validate", "--tasks",
         "longbench_sealong,sealong_synth", "--include_path", str(task_dir())],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
