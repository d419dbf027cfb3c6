"""``sealong demo``: its statistics, stage bookkeeping, config, and a real tiny run:
the slow half (models, end-to-end runs); the fast half is tests/test_demo.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import subprocess_env


# --------------------------------------------------------------------------- #
# The real thing, scaled down: every stage, real axolotl and lm-eval
# --------------------------------------------------------------------------- #
@pytest.mark.timeout(1500)
def test_demo_end_to_end_tiny(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = subprocess_env(SEALONG_CACHE=str(tmp_path / "c"))
    args = [
        sys.executable, "-m", "axolotl_sealong.cli.main", "demo", "--out", str(out),
        "--num-train", "4", "--num-eval", "10", "--num-samples", "3",
        "--min-tokens", "128", "--max-tokens", "200", "--max-new-tokens", "12",
        "--eval-max-gen-toks", "8", "--num-epochs", "1",
        # T=1: at the default 0.3 a handful of 8-token samples can all be equal,
        # which leaves no preference pair (the plugin then stops, by design)
        "--temperature", "1.0",
        # 4 probe questions: one with 3 equal samples would stop round 2 (the
        # stop itself is tested on a real run in test_iterate's e2e)
        "--no-stop-at-guard-cap",
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads((out / "report.json").read_text())
    assert report["n_eval"] == 10 and len(report["gain_ci95"]) == 2
    assert set(report["seconds"]) >= {
        "model", "data", "eval_0", "label_1", "train_1", "merge_1", "eval_1", "total"
    }  # fmt: skip
    assert 0 <= report["before"] <= 100 and 0 <= report["after"] <= 100
    assert report["rounds"][0]["counts"]["questions"] == 4
    assert (out / "round1" / "adapter" / "adapter_config.json").is_file()
    for name in ("report.md", "before_after.png", "mbr_scores.png"):
        assert (out / name).stat().st_size > 0
    assert "held-out SubEM" in done.stdout
    # a second round reuses every finished stage of the first: their records,
    # the adapter and the logs are untouched
    first = json.loads((out / "state.json").read_text())["stages"]
    adapter = out / "round1" / "adapter" / "adapter_model.safetensors"
    stamps = {p: p.stat().st_mtime_ns for p in (adapter, out / "logs" / "train_1.log")}
    again = subprocess.run(
        [*args, "--rounds", "2"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-5000:]
    stages = json.loads((out / "state.json").read_text())["stages"]
    assert all(stages[name] == rec for name, rec in first.items())
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {"label_2", "train_2", "merge_2", "eval_2"} <= set(stages)
    two = json.loads((out / "report.json").read_text())
    assert [e["label"] for e in two["evals"]] == ["before", "round 1", "round 2"]
    assert two["rounds"][1]["sampled_by"] == "round 1 model"
