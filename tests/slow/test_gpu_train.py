"""The GPU check's training stage (gpu_train.py) and what it needs to travel: the slow
half (models, end-to-end runs); the fast half is tests/test_gpu_train.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
from test_gpu_train import ROOT

HAS_AXOLOTL = importlib.util.find_spec("axolotl") is not None


@pytest.mark.skipif(not HAS_AXOLOTL, reason="axolotl not installed")
def test_gpu_check_dry_run_trains_with_our_trainer(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "gpu_check.sh"),
            str(out),
            "--dry-run",
            "--train-seq-lens",
            "384",
            "--workdir",
            str(tmp_path / "work"),
        ],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    report = json.loads(out.read_text())
    # the hf part ran and the training stage reused its model, in one JSON
    assert report["device"] == "cpu" and report["checks"]["seeded_samples_repeat"]
    train = report["train"]
    assert train["model"] == "reused" and train["config"] == "tiny"
    assert train["versions"]["axolotl"] == metadata.version("axolotl")
    assert train["versions"]["trl"] == metadata.version("trl")
    (run,) = train["runs"]
    log = (tmp_path / "work" / "train" / "train_384" / "train.log").read_text()
    assert run["returncode"] == 0 and run["finished"] is True, log[-3000:]
    assert run["sequence_len"] == 384 and run["out_of_memory"] is None
    # two steps, timed from inside the trainer
    assert run["steps_done"] == 2 and len(run["step_seconds"]) == 2
    assert all(s > 0 for s in run["step_seconds"]) and run["seconds_per_step"] > 0
    assert run["seconds_per_step"] == run["step_seconds"][1]
    # the plugin's trainer class trained (not TRL's or Axolotl's own)
    assert run["trainer_class"] == "ResponseNLLORPOTrainer"
    assert run["trainer_module"] == "axolotl_sealong.integrations.axolotl.orpo"
    assert run["response_nll_trainer"] is True
    assert "sealong: ResponseNLLORPOTrainer: ORPO NLL term over response" in log
    # the plugin labeled inside axolotl train, every sample from the cache
    assert run["labels"]["cache_hits"] == 2 and run["labels"]["sampled"] == 0
    assert run["labels"]["pairs"] == 2 and run["reused_presampled"] is True
    assert "sealong: self-labeling 2 question(s)" in log
    # rows as the trainer tokenized them: up to sequence_len, close to it
    assert len(run["rows"]) == 2
    for row in run["rows"]:
        assert 384 - 32 <= row["chosen"] <= 384 and 384 - 32 <= row["rejected"] <= 384
        assert row["prompt"] < row["chosen"]
    assert run["tokens_per_row_max"] == max(r["chosen"] for r in run["rows"])
    assert run["attn_implementation"] == "sdpa" == train["attention_requested"]
    assert run["gradient_checkpointing"] is True
    # GPU memory: the fields are there, and empty on a CPU
    assert run["peak_gib"] is None and run["step_peak_gib"] == [None, None]
