"""`sealong` as users call it (in-process through main(), and one real subprocess): the
slow half (models, end-to-end runs); the fast half is tests/test_cli.py.
"""

from __future__ import annotations

import json

from builders import (
    PLUGINS,
    recipe,
    self_label_dataset,
    write_yaml,
)
from test_cli import _data

from axolotl_sealong.cli.main import main


def test_label_from_flags(tiny_llama_dir, tmp_path, capsys):
    code = main(
        [
            "label",
            "--data",
            str(_data(tmp_path)),
            "--out",
            str(tmp_path / "out"),
            "--model",
            str(tiny_llama_dir),
            "--num-samples",
            "3",
            "--max-new-tokens",
            "8",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "MBR pick" in out and '"questions": 2' in out
    assert (tmp_path / "out" / "preference.jsonl").exists()


def test_label_from_axolotl_yaml_with_flag_override(tiny_llama_dir, tmp_path, capsys):
    data = _data(tmp_path)
    cfg_path = write_yaml(
        tmp_path / "recipe.yml",
        recipe(
            tiny_llama_dir,
            [self_label_dataset(data.name)],
            plugins=PLUGINS,
            sealong_num_samples=5,
            sealong_max_new_tokens=8,
            sealong_cache_dir=str(tmp_path / "cache"),
        ),
    )
    code = main(
        [
            "label",
            "--config",
            str(cfg_path),
            "--out",
            str(tmp_path / "o"),
            "--num-samples",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    diag = json.loads((tmp_path / "o" / "diagnostics.json").read_text())
    assert diag["settings"]["num_samples"] == 3  # the flag wins over YAML
    assert diag["settings"]["max_new_tokens"] == 8  # YAML value kept
    assert diag["settings"]["model"] == str(tiny_llama_dir)  # from base_model


def test_bench_mbr_json_scoring_is_cheap_next_to_embedding(capsys):
    assert main(["bench", "mbr", "--json", "--questions", "12", "--samples", "8"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"embed_s", "score_s"} <= set(result)
    assert result["texts"] == 96
    assert 250 <= result["mean_tokens_per_text"] <= 350
    assert result["windows"] > result["texts"]  # ~300 tokens: two windows each
    assert result["score_s"] < 0.05 * result["embed_s"]


def test_bench_sampling_json_rows_per_engine_and_length(tiny_llama_dir, capsys):
    args = ["bench", "sampling", "--json", "--model", str(tiny_llama_dir)]
    args += ["--engines", "hf,hf-fp32kv", "--prompt-tokens", "64,128"]
    args += ["--max-new-tokens", "6", "--n", "3", "--repeats", "3"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["engine"], r["prompt_tokens"]) for r in rows] == [
        ("hf", 64),
        ("hf", 128),
        ("hf-fp32kv", 64),
        ("hf-fp32kv", 128),
    ]
    for row in rows:
        assert {"n1_s", "n8_s", "ratio", "tokens_per_s_n1", "tokens_per_s_n8"} <= set(
            row
        )
        assert row["n"] == 3 and row["repeats"] == 3 and len(row["ratios"]) == 3
        # the ratio is the median of the pairs' ratios, not of the medians
        assert row["ratio"] == sorted(row["ratios"])[1]
        assert row["n1_s"] > 0 and row["n8_s"] > 0
        # split in phases (seconds to 2 decimals: the tiny model's prefill can be 0.0)
        assert row["prefill_s_n1"] >= 0 and row["decode_s_n8"] >= 0
    assert main(["bench", "sampling", "--engines", "hf-nope"]) == 2
    assert "unknown engine(s) ['hf-nope']" in capsys.readouterr().err


def test_bench_decode_times_and_profiles_steps(tiny_llama_dir, capsys):
    args = ["bench", "decode", "--json", "--model", str(tiny_llama_dir)]
    args += ["--prompt-tokens", "96", "--steps", "4", "--n", "3", "--repeats", "2"]
    assert main([*args, "--profile-ops", "4"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["engine"] == "hf" and row["n"] == 3 and row["steps"] == 4
    assert len(row["runs_ms_n1"]) == len(row["runs_ms_n8"]) == 2
    assert row["ms_per_step_n1"] > 0 and row["ms_per_step_n8"] > 0
    # the ratio of the unrounded medians, within what rounding to 0.1 ms allows
    m1, m8 = row["ms_per_step_n1"], row["ms_per_step_n8"]
    assert (m8 - 0.05) / (m1 + 0.05) - 0.01 <= row["step_ratio"]
    assert row["step_ratio"] <= (m8 + 0.05) / max(m1 - 0.05, 1e-9) + 0.01
    ops = row["ops_ms_per_step"]
    assert len(ops) == 4 and all(len(v) == 2 and v[1] > 0 for v in ops.values())
    bad = ["bench", "decode", "--engine", "hf-expand", "--model", str(tiny_llama_dir)]
    assert main(bad) == 2
    assert "shared-prefix hf engines, not hf-expand" in capsys.readouterr().err
