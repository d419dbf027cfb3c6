"""`sealong label --config` reads a recipe exactly as the plugin does.

Same settings (``max_model_len`` sized to ``sequence_len``), same questions
(every ``axolotl_sealong.self_label`` entry), hence the same prompts and one
sample cache: labeling with the CLI first warms ``axolotl train``.
"""

from __future__ import annotations

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
from axolotl_sealong.common.models import EMBEDDED_MODEL


def _questions(path: Path, start: int) -> Path:
    """Rows start..start+2; every third has no filler, the others 40 or 80
    words of it."""
    rows = question_rows(
        3,
        start=start,
        context=lambda i: (
            f"Passage 1:\nKel{i} is the capital of Zorvan{i}. "
            + "filler " * (40 * (i % 3))
        ),
    )
    return write_jsonl(path, rows)


def _recipe(tmp_path: Path, model: Path, **extra) -> Path:
    a = _questions(tmp_path / "a.jsonl", 0)
    b = _questions(tmp_path / "b.jsonl", 3)
    datasets = [
        self_label_dataset(a),
        {"path": "other.jsonl", "type": "alpaca"},  # passes through
        self_label_dataset(b.name),
    ]
    return write_yaml(
        tmp_path / "recipe.yml",
        recipe(
            model,
            datasets,
            plugins=PLUGINS,
            sequence_len=160,  # the long questions do not fit: skipped
            sealong_num_samples=3,
            sealong_max_new_tokens=8,
            sealong_utility="rouge_l",
            sealong_cache_dir=str(tmp_path / "cache"),
            **extra,
        ),
    )


def test_flags_override_the_recipe_before_it_is_read(tiny_llama_dir, tmp_path):
    """--max-model-len beats the sequence_len sizing; other YAML keys stay."""
    import argparse

    from axolotl_sealong.cli.label import add_config_flags, config_from_args

    recipe = _recipe(tmp_path, tiny_llama_dir)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--data")
    add_config_flags(parser)
    args = parser.parse_args(["--config", str(recipe), "--max-model-len", "512"])
    cfg, raw = config_from_args(args)
    assert cfg.max_model_len == 512 and cfg.num_samples == 3
    assert raw is not None and raw["sequence_len"] == 160
    args = parser.parse_args(["--config", str(recipe), "--num-samples", "5"])
    cfg, _ = config_from_args(args)
    assert cfg.num_samples == 5 and cfg.max_model_len == 160


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- a\n- b\n", "the YAML is a list, not a mapping"),
        ("base_model: [unclosed\n", "not valid YAML"),
        (
            f"base_model: {EMBEDDED_MODEL}\nsequence_len: 4096\n",
            "no datasets: entry has type: axolotl_sealong",
        ),
        (
            f"base_model: {EMBEDDED_MODEL}\nsequence_len: 1024\n",
            "sequence_len 1024 leaves no room for a prompt",
        ),
        ("sequence_len: 1024\n", "base_model is not set"),
    ],
)
def test_unreadable_recipes_are_named(tmp_path, capsys, text, match):
    path = tmp_path / "r.yml"
    path.write_text(text)
    assert main(["label", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
