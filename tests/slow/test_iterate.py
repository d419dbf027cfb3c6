"""``sealong iterate``: policies, signals, round configs, stages, a real tiny run: the
slow half (models, end-to-end runs); the fast half is tests/test_iterate.py.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_iterate import ROOT, _recipe

SYNTH_EVAL = ROOT / "tests" / "data" / "eval" / "synth_eval.jsonl"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "axolotl_sealong.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("edit", "flags", "message"),
    [
        (
            {"plugins": []},
            [],
            r"no `plugins: \[axolotl_sealong.SeaLongPlugin\]`",
        ),
        (
            {"datasets": [{"path": "q.jsonl", "type": "chat_template"}]},
            [],
            "no datasets: entry of type axolotl_sealong.self_label",
        ),
        ({"sealong_temprature": 0.5}, [], "unknown setting.*sealong_temprature"),
        ({"adapter": None}, ["--sample-with", "adapter"], "needs a LoRA recipe"),
        ({}, ["--train-from", "scratch"], "--train-from 'scratch'"),
        (
            {},
            ["--questions-per-round", "4", "--rounds", "3"],
            r"needs 12 questions, but the recipe's self-label datasets hold 8: "
            r"add questions, lower --questions-per-round to 2 or --rounds to 2",
        ),
    ],
)
def test_cli_refuses_bad_recipes_and_flags(
    tmp_path: Path, tiny_llama_dir: Path, edit: dict, flags: list, message: str
) -> None:
    """One line on stderr and exit 2, before any model loads (no stage starts)."""
    recipe = _recipe(tmp_path, tiny_llama_dir) | edit
    config = tmp_path / "recipe.yml"
    config.write_text(
        yaml.safe_dump({k: v for k, v in recipe.items() if v is not None})
    )
    out = tmp_path / "run"
    done = _cli("iterate", "--config", str(config), "--out", str(out), *flags)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "sealong iterate: error:" in done.stderr
    assert __import__("re").search(message, done.stderr), done.stderr[-2000:]
    assert "stage" not in done.stderr  # nothing ran
    assert not (out / "round1").exists()


# --------------------------------------------------------------------------- #
# The real thing: sealong iterate on a user recipe, tiny model, real axolotl
# --------------------------------------------------------------------------- #
@pytest.mark.timeout(1200)
def test_iterate_two_rounds_on_a_user_recipe(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """Fresh questions, bounded union from the base, adapter sampling, guard,
    margin, eval; then the same round 2 under the early stop."""
    config = tmp_path / "recipe.yml"
    config.write_text(yaml.safe_dump(_recipe(tmp_path, tiny_llama_dir)))
    out = tmp_path / "run"
    metadata = json.dumps({"synth_eval_path": str(SYNTH_EVAL), "max_gen_toks": 4})
    flags = (
        "--config", str(config), "--rounds", "2",
        "--questions-per-round", "4", "--train-from", "base",
        "--sample-with", "adapter",
        # a random model's samples never look alike: a threshold they always
        # pass makes the guard climb to its cap, for real
        "--guard-mean-similarity", "0.01", "--guard-probe-questions", "4",
        "--guard-temperature-step", "0.3", "--guard-max-temperature", "1.0",
        "--margin-quantile", "0.5", "--union-max-rows", "3",
        "--eval-tasks", "sealong_synth",
        f"--eval-args=--metadata {shlex.quote(metadata)} --gen_kwargs max_gen_toks=4",
    )  # fmt: skip
    done = _cli("iterate", "--out", str(out), *flags)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    report = json.loads((out / "report.json").read_text())
    saved = json.loads((out / "state.json").read_text())
    assert saved["format"] == 2
    state = saved["stages"]
    assert {"eval_0", "label_1", "train_1", "eval_1", "guard_2", "label_2",
            "train_2", "eval_2"} <= set(state)  # fmt: skip
    assert "merge_1" not in state  # adapter sampling merges nothing
    r1, r2 = report["rounds"]
    # fresh questions: round 2 labeled the pool's rows 4-7
    assert r1["counts"]["questions"] == r2["counts"]["questions"] == 4
    assert r2["policy"]["questions"]["first"] == 4
    # the guard probed twice and sampled round 2 at its cap
    assert [p["temperature"] for p in r2["policy"]["probes"]] == [0.7, 1.0]
    assert r2["temperature"] == 1.0 and r1["policy"]["probes"] == []
    assert "guard at its cap T=1.00" in done.stderr
    # round 2 sampled with base + round-1 adapter and trained the base on both
    # rounds' rows (its own filtered by margin)
    cfg2 = yaml.safe_load((out / "round2" / "train.yml").read_text())
    assert cfg2["sealong_adapter"] == str(out / "round1" / "adapter")
    assert cfg2["base_model"] == str(tiny_llama_dir)
    assert cfg2["sealong_margin"] == r2["margin"] > 0
    # round 1 is the paper's method: every pair, no margin
    assert r1["margin"] is None
    assert "sealong_margin" not in yaml.safe_load(
        (out / "round1" / "train.yml").read_text()
    )
    # bounded union: round 2's own pairs + round 1's largest-gap rows, <= 3 in all
    union = state["union_2"]["result"]
    assert (
        cfg2["datasets"][1]["path"]
        == union["file"]
        == str(out / "round2" / "union.jsonl")
    )
    older = Path(state["train_1"]["result"]["train_file"]).read_text().splitlines()
    kept = Path(union["file"]).read_text().splitlines()
    assert set(kept) <= set(older)
    assert len(kept) == min(len(older), 3 - union["own_rows"])
    assert r2["policy"]["union_rows"] == len(kept)
    assert r2["policy"]["training_rows"] <= r2["pairs"]
    # label-free signals and gold diagnostics per round; eval with the adapter
    for r in (r1, r2):
        assert 0 <= r["signals"]["identical_share"] <= 1
        assert r["signals"]["questions"] == 4
    assert "peft=" in state["eval_2"]["result"]["command"]
    assert [e["label"] for e in report["evals"]] == ["before", "round 1", "round 2"]
    assert report["evals"][2]["gain_vs_previous"]["gain_ci95"]
    assert "## Label-free signals" in (out / "report.md").read_text()

    # the same round 2 under --stop-at-guard-cap: the guard ends at its cap still
    # tripping, so the iteration stops before round 2 labels; round 1 is the result
    stop = tmp_path / "stop"
    args = ("iterate", "--out", str(stop), *flags, "--stop-at-guard-cap",
            "--from-run", str(out), "--from-round", "2")  # fmt: skip
    done = _cli(*args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    state = json.loads((stop / "state.json").read_text())["stages"]
    assert "guard_2" in state and "train_1" in state
    assert not {"label_2", "union_2", "train_2", "eval_2"} & set(state)
    report = json.loads((stop / "report.json").read_text())
    assert report["stopped"]["round"] == 2 and report["stopped"]["result_round"] == 1
    assert [e["label"] for e in report["evals"]] == ["before", "round 1"]
    assert "**Round 2: stopped** before labeling" in (stop / "report.md").read_text()
    assert "round 2: stopped before labeling (guard at its cap" in done.stdout
    again = _cli(*args)  # resumes to the same decision, probing nothing
    assert again.returncode == 0
    assert "guard probe" not in again.stderr
    assert (
        json.loads((stop / "report.json").read_text())["stopped"] == (report["stopped"])
    )
