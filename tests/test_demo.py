"""``sealong demo``: its statistics, stage bookkeeping, config, and a real tiny run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from builders import CPU_NODE, validate

from axolotl_sealong.demo import report as demo_report, run as demo
from axolotl_sealong.demo.run import DEMO_STAGES, DataRecord, DemoSettings, Stages
from axolotl_sealong.iterate import plots, stats
from axolotl_sealong.iterate.records import ModelRecord, ScoreDistribution


# --------------------------------------------------------------------------- #
# Bootstrap intervals
# --------------------------------------------------------------------------- #
def test_bootstrap_ci_brackets_the_mean_and_narrows_with_n() -> None:
    assert stats.bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    small = [1.0] * 3 + [0.0] * 7
    big = small * 10
    lo_s, hi_s = stats.bootstrap_ci(small, samples=2000)
    lo_b, hi_b = stats.bootstrap_ci(big, samples=2000)
    assert lo_s < 0.3 < hi_s and lo_b < 0.3 < hi_b
    assert hi_b - lo_b < (hi_s - lo_s) / 2  # sqrt(10) narrower, roughly
    # binomial standard error at p=0.3, n=100 is 0.046: the interval is about +-0.09
    assert 0.15 < hi_b - lo_b < 0.22
    with pytest.raises(ValueError, match="at least one"):
        stats.bootstrap_ci([])


def test_paired_gain_is_significant_only_when_it_should_be() -> None:
    before = [0.0] * 50 + [1.0] * 50
    same = stats.gain_summary(before, list(before))
    assert same == {"gain": 0.0, "gain_ci95": [0.0, 0.0], "significant": False}
    # 15 of 100 questions flip from wrong to right, none the other way
    better = [1.0] * 15 + [0.0] * 35 + [1.0] * 50
    up = stats.gain_summary(before, better)
    assert up["gain"] == 15.0 and up["significant"] and up["gain_ci95"][0] > 0
    # 10 flip each way: no net gain, an interval around zero
    mixed = [1.0] * 10 + [0.0] * 40 + [0.0] * 10 + [1.0] * 40
    flat = stats.gain_summary(before, mixed)
    assert flat["gain"] == 0.0 and not flat["significant"]
    assert flat["gain_ci95"][0] < 0 < flat["gain_ci95"][1]
    with pytest.raises(ValueError, match="one score per question"):
        stats.gain_summary([1.0], [1.0, 0.0])


def test_report_markdown_and_plots(tmp_path: Path) -> None:
    """The demo's report.md: its own header on iterate's tables and plots."""
    evals = [
        {"label": "before", "subem": 20.0, "ci95": [12.0, 28.0], "n": 100,
         "output_tokens": 30.0},
        {"label": "round 1", "subem": 30.0, "ci95": [21.0, 39.0], "n": 100,
         "output_tokens": 25.0, "gain": 10.0, "gain_ci95": [3.0, 17.0]},
    ]  # fmt: skip
    rounds = [
        {
            "round": 1,
            "sampled_by": "base model",
            "diagnostics": {"mbr_pick": 40.0, "random_sample": 25.0,
                            "sample_mean": 26.0, "oracle": 70.0},
            "pairs": 3,
            "lengths": {"all": 20.0, "chosen": 18.0, "rejected": 30.0},
            "score_distribution": {"all": [0.5, 0.6, 0.7, 0.9], "chosen": [0.9],
                                   "rejected": [0.5]},
        }
    ]  # fmt: skip
    report = {
        "settings": demo.dataclasses.asdict(DemoSettings()),
        "command": "sealong demo --out x",
        "machine": "test",
        "finished": "now",
        "model": "m",
        "dtype": {"sampling": "float32", "eval_and_train": "bfloat16"},
        "n_eval": 100,
        "evals": evals,
        "tasks": {"sealong_synth": evals},
        "rounds": rounds,
        "before": 20.0,
        "after": 30.0,
        "gain": 10.0,
        "gain_ci95": [3.0, 17.0],
        "significant": True,
        "seconds": {"eval_0": 10.0},
    }
    text = demo_report.render_markdown(report)
    assert "| round 1 | 30.0 | 21.0-39.0 | +10.0 | [+3.0, +17.0] |  |  | 25.0 |" in text
    assert "excludes zero" in text and "| 1 | base model | 40.0 | 25.0 |" in text
    assert text.startswith("# SEALONG demo report\n")
    assert "Model: m, sampled in float32, evaluated and trained in bfloat16." in text
    assert "held-out eval split (disjoint entity names, seed 2)" in text
    dist = ScoreDistribution(all=[0.5, 0.6, 0.7, 0.9], chosen=[0.9], rejected=[0.5])
    for path in (
        plots.plot_before_after(evals, tmp_path / "ba.png"),
        plots.plot_scores({1: dist}, tmp_path / "s.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- #
# Settings and stages
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_samples": 1}, "--num-samples must be >= 2"),
        ({"num_eval": 5}, "--num-eval must be >= 10"),
        ({"hops": "0"}, "--hops"),
        ({"prompt_strategy": "plan"}, "unknown prompt strategy"),
        ({"temperature": 0.0}, "--temperature"),
        ({"min_tokens": 900, "max_tokens": 800}, "--min-tokens"),
        ({"eval_split": "dev", "eval_seed": 0}, "--eval-seed must differ"),
        ({"dtype": "float16"}, "--dtype must be one of auto, float32, bfloat16"),
    ],
)
def test_bad_settings_fail_before_work(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DemoSettings(**change).check()


def test_dtype_reaches_lm_eval_and_axolotl(tmp_path: Path) -> None:
    import torch

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    auto = "bfloat16" if native or torch.cuda.is_available() else "float32"
    assert demo.resolve_dtype("auto") == auto
    for name in ("float32", "bfloat16"):
        s = DemoSettings(dtype=name)
        cmd = demo.lm_eval_cmd(tmp_path, tmp_path, tmp_path / "eval.jsonl", s)
        assert f"dtype={name}" in cmd[cmd.index("--model_args") + 1]
        cfg = demo.train_config(s, tmp_path, tmp_path / "train.jsonl", tmp_path)
        assert cfg["bf16"] is (name == "bfloat16") and cfg["fp16"] is False


def test_stages_resume_and_refuse_other_settings(tmp_path: Path) -> None:
    calls: list[str] = []
    one, two = ModelRecord(model="1"), ModelRecord(model="2")
    stages = Stages(tmp_path, DemoSettings(), fresh=False, kinds=DEMO_STAGES)
    assert stages.run("model", lambda: calls.append("a") or one) == one
    again = Stages(tmp_path, DemoSettings(), fresh=False, kinds=DEMO_STAGES)
    assert again.run("model", lambda: calls.append("a2") or two) == one
    assert calls == ["a"]  # the finished stage was not run again
    with pytest.raises(ValueError, match=r"num_train \(128 -> 8\).*--fresh"):
        Stages(tmp_path, DemoSettings(num_train=8), fresh=False, kinds=DEMO_STAGES)
    fresh = Stages(tmp_path, DemoSettings(num_train=8), fresh=True, kinds=DEMO_STAGES)
    assert list(fresh) == []


def test_converted_model_is_keyed_by_content_not_install(tmp_path: Path) -> None:
    """A second venv or clone reuses the conversion; another GGUF does not.

    The key used to include the file's mtime, so every install converted the model
    again into a new 517 MB folder (40 of them filled the disk CI runs on).
    """
    import shutil

    from axolotl_sealong.common.models import gguf_fingerprint, smollm2_gguf_path

    shipped = smollm2_gguf_path()
    copy = tmp_path / "other_venv" / shipped.name
    copy.parent.mkdir()
    shutil.copyfile(shipped, copy)  # a new path and a new mtime
    os.utime(copy, ns=(1, 1))
    assert gguf_fingerprint(copy) == gguf_fingerprint(shipped)
    with copy.open("r+b") as f:  # one byte changed near the end: a new model
        f.seek(-10, os.SEEK_END)
        byte = f.read(1)
        f.seek(-10, os.SEEK_END)
        f.write(bytes([byte[0] ^ 1]))
    assert gguf_fingerprint(copy) != gguf_fingerprint(shipped)


def test_held_out_questions_come_from_their_own_split_and_seed(tmp_path: Path) -> None:
    from axolotl_sealong.common.models import smollm2_dir
    from axolotl_sealong.core.pipeline import read_rows

    model = smollm2_dir()
    s = DemoSettings(num_train=4, num_eval=10, min_tokens=128, max_tokens=200)

    def build(name: str, **change: object) -> tuple[list, list, DataRecord]:
        made = demo.build_data(
            tmp_path / name, demo.dataclasses.replace(s, **change), model
        )
        return read_rows(made.train.path), read_rows(made.eval.path), made

    train, held, made = build("default")
    assert made.eval.split == "eval" and len(held) == 10 == made.eval.rows
    assert {r["id"] for r in held}.isdisjoint(r["id"] for r in train)
    # another eval seed: other held-out questions, the same training questions
    train2, held2, _ = build("seed3", eval_seed=3)
    assert train2 == train
    assert [r["question"] for r in held2] != [r["question"] for r in held]
    # dev: the training split's names, the eval seed's questions
    _, dev, made = build("dev", eval_split="dev")
    assert made.eval.split == "train"
    assert {r["question"] for r in dev}.isdisjoint(r["question"] for r in train)


def test_train_config_validates_with_the_plugin(tmp_path: Path) -> None:
    """The config the demo hands to ``axolotl`` passes Axolotl's own validation."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.dict import DictDefault

    from axolotl_sealong.common.models import smollm2_dir

    s = DemoSettings(learning_rate=3e-4, num_samples=4, prompt_strategy="none")
    data = tmp_path / "train.jsonl"
    data.write_text("")
    cfg = DictDefault(demo.train_config(s, smollm2_dir(), data, tmp_path / "round1"))
    prepare_plugins(cfg)
    out = validate(cfg, CPU_NODE)
    assert out["learning_rate"] == 3e-4 and out["sealong_num_samples"] == 4
    assert out["sealong_prompt_strategy"] == "none" and out["rl"] == "orpo"
    assert out["output_dir"] == str(tmp_path / "round1" / "adapter")
