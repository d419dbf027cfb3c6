"""`sealong` as users call it (in-process through main(), and one real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builders import (
    PLUGINS,
    question_rows,
    recipe,
    self_label_dataset,
    write_jsonl,
    write_yaml,
)

from axolotl_sealong.cli.main import main
from axolotl_sealong.core.config import LabelConfig


def test_help_documents_every_command_and_setting(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    top = capsys.readouterr().out
    for cmd in ("label", "bench"):
        assert cmd in top
    with pytest.raises(SystemExit):
        main(["label", "--help"])
    text = capsys.readouterr().out
    for name in LabelConfig.model_fields:
        assert "--" + name.replace("_", "-") in text


def _data(tmp_path):
    # answers as a plain string, as users may write them
    rows = question_rows(
        2, context="Passage 1:\nKel{i} is the capital of Zorvan{i}.", answers="Kel{i}"
    )
    return write_jsonl(tmp_path / "q.jsonl", rows)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--num-samples", "1"], "num_samples .*--num-samples.*>= 2"),
        (["--top-p", "0"], r"top_p .*\(0, 1\]"),
    ],
)
def test_bad_flags_give_one_clear_line(tmp_path, capsys, flags, match):
    code = main(
        ["label", "--data", str(_data(tmp_path)), "--out", str(tmp_path), *flags]
    )
    assert code == 2
    import re

    assert re.search(match, capsys.readouterr().err)


def test_missing_data_is_explained(tmp_path, capsys):
    assert main(["label", "--out", str(tmp_path)]) == 2
    assert "--data PATH" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_mbr_json_scoring_is_cheap_next_to_embedding(capsys):
    assert main(["bench", "mbr", "--json", "--questions", "12", "--samples", "8"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"embed_s", "score_s"} <= set(result)
    assert result["texts"] == 96
    assert 250 <= result["mean_tokens_per_text"] <= 350
    assert result["windows"] > result["texts"]  # ~300 tokens: two windows each
    assert result["score_s"] < 0.05 * result["embed_s"]


@pytest.mark.slow
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


@pytest.mark.slow
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


SCRIPT = Path(sys.executable).parent / "sealong"


@pytest.mark.skipif(
    not SCRIPT.exists() and shutil.which("sealong") is None,
    reason="console script not installed (run scripts/setup.sh)",
)
def test_console_script_runs():
    script = str(SCRIPT) if SCRIPT.exists() else "sealong"
    out = subprocess.run(
        [script, "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("label", "data", "recipes", "eval", "bench"):
        assert command in out


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "axolotl_sealong.cli.main", "bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "mbr" in out.stdout
