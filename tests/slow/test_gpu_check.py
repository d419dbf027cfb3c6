"""scripts/gpu_check.sh in its CPU dry-run mode (tiny config, float32).

The real run needs a CUDA GPU (bash scripts/gpu_check.sh on one); here the
same code runs end to end on the CPU, once through the script and once with
every package a bare GPU image lacks made unimportable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# every test runs the script's model end to end in a subprocess (9-20 s each)
ROOT = Path(__file__).resolve().parents[2]
# what the bare GPU machine does not have (torch, transformers, accelerate,
# peft, sentence-transformers and their dependencies it has)
ABSENT = ("pydantic", "axolotl", "vllm", "gguf", "lm_eval", "trl", "datasets")


def _check_report(path: Path) -> dict:
    report = json.loads(path.read_text())
    assert report["device"] == "cpu" and report["config"] == "tiny"
    checks = report["checks"]
    assert checks["greedy_equals_generate"] and checks["seeded_samples_repeat"]
    assert checks["other_seed_differs"] and checks["greedy_tokens"] == 8
    runs = {(r["method"], r["n"]): r for r in report["runs"]}
    assert set(runs) == {
        (m, n) for m in ("shared_prefix", "expand", "generate") for n in (1, 4)
    }
    assert all(r["seconds"] > 0 and r["samples"] == r["n"] for r in runs.values())
    assert report["summary"]["generate_over_shared_prefix_n4"] > 0
    return report


def _script(out: Path, *args: str) -> subprocess.CompletedProcess:
    """bash scripts/gpu_check.sh OUT --dry-run --no-train ARGS (the hf part; the
    training stage has its own test, test_gpu_train.py), with this python."""
    script = str(ROOT / "scripts" / "gpu_check.sh")
    done = subprocess.run(
        ["bash", script, str(out), "--dry-run", "--no-train", *args],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_gpu_check_script_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = _script(out)
    assert json.loads(done.stdout.splitlines()[-1])["out"] == str(out)
    _check_report(out)


def test_gpu_check_needs_nothing_a_bare_gpu_image_lacks(tmp_path):
    out = tmp_path / "gpu_check.json"
    code = (
        "import runpy, sys\n"
        f"for name in {ABSENT!r}:\n"
        "    sys.modules[name] = None  # import fails, as on the bare image\n"
        f"sys.argv = ['bench_gpu', '--dry-run', '--out', {str(out)!r}]\n"
        "runpy.run_module('axolotl_sealong.bench.gpu_check', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _check_report(out)


def test_gpu_check_dtype_and_budget(tmp_path):
    """--dtype reaches the model (the float32 rerun that told bf16 rounding from a
    kernel bug on the H200); --budget-s 0 skips every timed run and says so."""
    out = tmp_path / "gpu_check.json"
    _script(out, "--dtype", "bfloat16", "--budget-s", "0")
    report = json.loads(out.read_text())
    assert report["dtype"] == "bfloat16"
    assert report["checks"]["seeded_samples_repeat"] is True
    assert {r.get("skipped") for r in report["runs"]} == {"time budget"}
    assert len(report["runs"]) == 6
