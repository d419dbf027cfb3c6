"""`sealong check RECIPE.yml`, the preflight, for real (subprocesses of the CLI).

The CPU demo recipe passes in seconds; a copy with a broken embedder and one
with a bad question row fail in seconds, naming the file and the fix; `axolotl
preprocess` on the broken-embedder copy stops before sampling anything. The
GPU recipe is checked against a simulated 8-GPU node (a scripted nvidia-smi
and a fake CUDA vLLM interpreter, tests/gpu_fakes.py: there is no GPU here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from gpu_fakes import install_cuda_python, install_nvidia_smi, node_state, path_with

from axolotl_sealong.bench.tiny import build_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
CONFIGS = ROOT / "tests" / "data" / "model_configs"
MAIN = "import sys; from axolotl_sealong.cli.main import main; sys.exit(main())"
SEALONG = [sys.executable, "-c", MAIN]


def _run(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300):
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    t0 = time.monotonic()
    done = subprocess.run(
        args, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
    )
    return done, time.monotonic() - t0


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The CPU demo recipe with its questions, as its header builds them."""
    folder = tmp_path_factory.mktemp("demo")
    done, _ = _run(
        [*SEALONG, "data", "synth", "--out", "data/synth_train.jsonl", "--num",
         "64", "--seed", "0", "--split", "train", "--min-tokens", "256",
         "--max-tokens", "512", "--hops", "1", "--distractors", "0"],
        cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    recipe = yaml.safe_load((RECIPES / "smollm2_135m_orpo_cpu.yml").read_text())
    recipe["sealong_cache_dir"] = str(folder / "samples")
    (folder / "recipe.yml").write_text(yaml.safe_dump(recipe))
    return folder


def _variant(demo: Path, name: str, **change) -> Path:
    recipe = yaml.safe_load((demo / "recipe.yml").read_text())
    recipe.update(change)
    path = demo / f"{name}.yml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _report(path: Path) -> dict:
    report = json.loads(path.read_text())
    return {c["name"]: c for c in report["checks"]} | {"_": report}


def test_the_demo_recipe_passes_in_seconds(demo):
    done, seconds = _run([*SEALONG, "check", "recipe.yml", "--json", "r.json"], demo)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    checks = _report(demo / "r.json")
    assert seconds < 30, seconds
    for name in ("recipe", "sealong settings", "questions", "embedder", "estimate"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["questions"]["summary"] == "64 of 64 to label"
    assert "prompt tokens with the model's tokenizer: min" in done.stdout
    assert "0 of 64 questions sampled" in done.stdout
    assert checks["sampling engine"]["summary"] == "hf engine in this process on cpu"
    assert "U = 1 process(es)" in done.stdout
    assert "assumed: prefill 560 and decode 310 tokens/s" in done.stdout
    assert "0 failed" in done.stdout.splitlines()[-1]


def test_a_broken_embedder_fails_in_seconds_and_preprocess_samples_nothing(
    demo, tmp_path
):
    broken = tmp_path / "embedder"
    shutil.copytree(_minilm(), broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    recipe = _variant(demo, "broken_embedder", sealong_embedder=str(broken))
    done, seconds = _run([*SEALONG, "check", recipe.name, "--json", "b.json"], demo)
    assert done.returncode == 1, done.stdout[-3000:]
    checks = _report(demo / "b.json")
    assert checks["embedder"]["status"] == "FAIL"
    assert str(broken) in checks["embedder"]["summary"]
    assert "sealong_embedder" in checks["embedder"]["fix"]
    assert seconds < 60
    # axolotl preprocess on the same recipe stops before any sampling
    axolotl = shutil.which("axolotl") or str(Path(sys.executable).parent / "axolotl")
    cache = demo / "samples"
    shutil.rmtree(cache, ignore_errors=True)
    done, seconds = _run(
        [axolotl, "preprocess", recipe.name], demo,
        env={"HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"}, timeout=600,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert "failed to load or embed a sentence" in out and "Nothing was sampled" in out
    assert "sampling engine: hf" not in out  # the sampler was never opened
    assert not any(p.stat().st_size for p in cache.rglob("*.jsonl"))


def _minilm() -> Path:
    from axolotl_sealong.common.models import minilm_dir

    return minilm_dir()


def test_a_bad_question_row_fails_naming_the_file_and_the_fix(demo):
    rows = (demo / "data" / "synth_train.jsonl").read_text().splitlines()
    bad = json.loads(rows[5])
    del bad["question"]
    rows[5] = json.dumps(bad)
    (demo / "data" / "bad.jsonl").write_text("\n".join(rows) + "\n")
    recipe = yaml.safe_load((demo / "recipe.yml").read_text())
    recipe["datasets"][0]["path"] = "data/bad.jsonl"
    (demo / "bad_row.yml").write_text(yaml.safe_dump(recipe))
    done, seconds = _run([*SEALONG, "check", "bad_row.yml"], demo)
    assert done.returncode == 1
    line = next(ln for ln in done.stdout.splitlines() if "questions:" in ln)
    assert "[FAIL]" in line and "data/bad.jsonl" in line
    assert "question field 'question' is empty or not a string in 1 row(s)" in line
    assert "(first: row 5)" in line
    assert "fix or remove those rows" in line
    assert seconds < 60


def test_axolotl_sealong_check_is_the_same_command(demo):
    """Axolotl 0.19 serves the `axolotl.cli_commands` entry point group."""
    from importlib.metadata import entry_points

    if not any(e.name == "sealong" for e in entry_points(group="axolotl.cli_commands")):
        pytest.skip("the package is not installed with its entry points")
    axolotl = shutil.which("axolotl") or str(Path(sys.executable).parent / "axolotl")
    done, _ = _run([axolotl, "sealong", "check", "recipe.yml", "--no-embedder"], demo)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "sealong check recipe.yml" in done.stdout
    helped, _ = _run([axolotl, "sealong", "--help"], demo)
    assert "usage: axolotl sealong" in helped.stdout and "check" in helped.stdout


def test_the_gpu_recipe_on_a_simulated_8_gpu_node(demo, tmp_path):
    """The shipped one-GPU recipe's settings, a local Llama-3.1-8B-shaped model
    folder (config only: nothing loads weights), the fake node and server env."""
    model = tmp_path / "Llama-3.1-8B-Instruct"
    build_tiny_tokenizer(model)
    shutil.copy(CONFIGS / model.name / "config.json", model / "config.json")
    smi = tmp_path / "smi"
    install_nvidia_smi(smi, node_state(other_jobs={6: 30000}))
    python = install_cuda_python(tmp_path / "venv", tmp_path / "record.json")
    recipe = yaml.safe_load((RECIPES / "llama31_8b_orpo.yml").read_text())
    recipe.update(
        base_model=str(model),
        sealong_vllm_server_python=str(python),
        sealong_embedder=str(_minilm()),
        sealong_embedder_trust_remote_code=False,
        sealong_cache_dir=str(tmp_path / "samples"),
        sealong_output_dir=str(tmp_path / "labels"),
    )
    recipe["datasets"][0]["path"] = str(demo / "data" / "synth_train.jsonl")
    path = tmp_path / "gpu.yml"
    path.write_text(yaml.safe_dump(recipe))
    done, _ = _run(
        [*SEALONG, "check", str(path), "--json", str(tmp_path / "g.json")],
        tmp_path,
        env={"PATH": path_with(smi), "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5"},
    )
    checks = _report(tmp_path / "g.json")
    engine = checks["sampling engine"]
    assert engine["status"] == "ok", engine
    assert (
        "6 data-parallel replica(s) x tensor parallel 1 = 6 of 6" in engine["summary"]
    )
    assert "vllm 0.23.0" in engine["summary"]
    assert any(
        "driver 580.95.05; 6 of 8 GPU(s) visible" in d for d in engine["details"]
    )
    estimate = checks["estimate"]
    assert "U = 6 GPU(s)" in estimate["details"][0]
    assert "prefill 10,000 and decode 1,500 tokens/s per GPU" in done.stdout
    # no flash-attn here, and no GPU: needed on the node that trains, not here
    assert checks["training packages"]["status"] == "warn"
    assert not (tmp_path / "record.json").exists()  # no server was started


def test_the_openai_name_found_by_the_cache_check_is_not_asked_again():
    """`_openai` reuses the served name `_done` got; without it, it asks (and
    an unreachable server still fails the check). Each URL is one unit."""
    from axolotl_sealong.core.config import LabelConfig
    from axolotl_sealong.integrations.axolotl import preflight

    down = "http://127.0.0.1:9/v1, http://127.0.0.1:9/v2/"  # nothing listens
    state = preflight._State(Path("recipe.yml"))
    state.label_cfg = LabelConfig(sampler="openai", openai_base_urls=down)
    state.served = "round-2"
    check = preflight._openai(state)
    assert check.status == preflight.OK and "'round-2'" in check.summary
    assert state.gpus_for_estimate == 2
    state.served = None
    check = preflight._openai(state)
    assert check.status == preflight.FAIL and "cannot list models" in check.summary
