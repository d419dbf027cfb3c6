"""`axolotl preprocess` / `axolotl train` for real, in a subprocess, on CPU.

A tiny random Llama built from a config is both the sampling and the training
model; the questions are a few short long-context-style rows. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AXOLOTL = shutil.which("axolotl") or str(Path(sys.executable).parent / "axolotl")
pytestmark = pytest.mark.skipif(
    not Path(AXOLOTL).exists(), reason="axolotl CLI not installed"
)


def _questions(path: Path, n: int = 4) -> Path:
    rows = [
        {
            "context": "\n".join(
                f"Passage {j}:\nZorvan{i}-{j} lies on the river Kel{j}."
                for j in range(6)
            ),
            "question": f"Which river does Zorvan{i}-3 lie on?",
            "answers": ["Kel3"],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(tmp: Path, model: Path, mode: str, **extra) -> Path:
    cfg = {
        "base_model": str(model),
        "plugins": ["axolotl_sealong.SeaLongPlugin"],
        "datasets": [
            {
                "path": str(_questions(tmp / "questions.jsonl")),
                "ds_type": "json",
                "split": "train",
                "type": "axolotl_sealong.self_label",
            }
        ],
        "sealong_num_samples": 3,
        "sealong_max_new_tokens": 16,
        "sealong_cache_dir": str(tmp / "samples"),
        "chat_template": "tokenizer_default",
        "sequence_len": 1024,
        "adapter": "lora",
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "lora_target_linear": True,
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "max_steps": 2,
        "optimizer": "adamw_torch",
        "learning_rate": 1e-4,
        "bf16": False,
        "fp16": False,
        "dataset_num_proc": 1,
        "dataset_prepared_path": str(tmp / "prepared"),
        "output_dir": str(tmp / "out"),
        "save_safetensors": True,
    }
    if mode == "orpo":
        cfg |= {"rl": "orpo", "orpo_alpha": 0.1, "remove_unused_columns": False}
    else:
        cfg |= {f"lora_{k}_kernel": False for k in ("mlp", "qkv", "o", "embedding")}
    cfg |= extra
    path = tmp / f"{mode}.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _axolotl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
    }
    return subprocess.run(
        [AXOLOTL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _labeled(root: Path) -> list[dict]:
    return [json.loads(d.read_text()) for d in root.glob("*/diagnostics.json")]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["orpo", "sft"])
def test_preprocess_then_train_leaves_an_adapter(tiny_llama_dir, tmp_path, mode):
    recipe = _recipe(tmp_path, tiny_llama_dir, mode)
    pre = _axolotl("preprocess", str(recipe), cwd=tmp_path)
    assert pre.returncode == 0, pre.stdout[-3000:] + pre.stderr[-3000:]
    (diag,) = _labeled(tmp_path / "prepared" / "sealong")
    assert diag["counts"]["sampled"] == 4
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()

    train = _axolotl("train", str(recipe), "--launcher", "python", cwd=tmp_path)
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-5000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert "sealong: reusing labeled rows" in log  # train sampled nothing
    assert "self-labeling" not in log
    samples = list((tmp_path / "samples").glob("*/samples.jsonl"))
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 4
    if mode == "sft":
        return
    # rows written elsewhere (another prepared path, another machine sharing
    # the sample cache): labeling runs again but every sample comes from cache
    recipe = _recipe(
        tmp_path, tiny_llama_dir, mode, sealong_output_dir=str(tmp_path / "rows2")
    )
    again = _axolotl("preprocess", str(recipe), cwd=tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    (diag,) = _labeled(tmp_path / "rows2")
    assert diag["counts"]["cache_hits"] == 4 and diag["counts"]["sampled"] == 0


def _load_cfg(path: Path):
    """Axolotl's own config loading (plugins registered, schema merged), in-process."""
    from axolotl.cli.config import load_cfg

    return load_cfg(str(path))


def test_bad_key_is_caught_at_config_validation(tiny_llama_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_llama_dir, "orpo", sealong_num_samples=1)
    with pytest.raises(Exception, match="sealong_num_samples: num_samples must be"):
        _load_cfg(recipe)
    typo = _recipe(tmp_path, tiny_llama_dir, "orpo", sealong_num_sample=8)
    with pytest.raises(Exception, match="unknown setting.*sealong_num_sample:"):
        _load_cfg(typo)
    cfg = _load_cfg(_recipe(tmp_path, tiny_llama_dir, "orpo"))
    assert cfg.sealong_num_samples == 3  # declared keys survive validation


def test_mode_without_matching_rl_is_refused(tiny_llama_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_llama_dir, "sft", sealong_mode="orpo")
    with pytest.raises(Exception, match="sealong_mode: orpo does not match rl"):
        _load_cfg(recipe)


@pytest.mark.parametrize("mode", ["orpo", "sft"])
def test_without_the_plugin_training_stops_with_a_clear_error(
    tiny_llama_dir, tmp_path, mode
):
    # a plugin that is not listed, or failed to import (axolotl only logs that):
    # the dataset type itself refuses to be trained on unlabeled
    recipe = _recipe(
        tmp_path, tiny_llama_dir, mode, plugins=["axolotl_sealong_typo.SeaLongPlugin"]
    )
    run = _axolotl("preprocess", str(recipe), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "this dataset needs `plugins: [axolotl_sealong.SeaLongPlugin]`" in out
    assert not (tmp_path / "prepared" / "sealong").exists()


@pytest.mark.slow
def test_concurrent_ranks_label_once(tiny_llama_dir, tmp_path):
    """Two processes (as two ranks would) enter the hook at once: one labels."""
    recipe = _recipe(tmp_path, tiny_llama_dir, "orpo")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
    }
    procs = [
        subprocess.Popen(
            [AXOLOTL, "preprocess", str(recipe)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    labeled = [log for log in logs if "sealong: self-labeling" in log]
    reused = [log for log in logs if "sealong: reusing labeled rows" in log]
    assert len(labeled) == 1 and len(reused) == 1
    samples = list((tmp_path / "samples").glob("*/samples.jsonl"))
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 4
