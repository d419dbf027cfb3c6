"""`sealong label --config` reads a recipe exactly as the plugin does: the slow half
(models, end-to-end runs); the fast half is tests/test_recipe_cli.py.
"""

from __future__ import annotations

import json

import yaml
from test_recipe_cli import _recipe

from axolotl_sealong.cli.main import main


def test_cli_labels_every_self_label_dataset_with_the_plugins_settings(
    tiny_llama_dir, tmp_path, monkeypatch
):
    recipe = _recipe(tmp_path, tiny_llama_dir)
    monkeypatch.chdir(tmp_path)  # b.jsonl is relative, as axolotl reads it
    code = main(["label", "--config", str(recipe), "--out", "cli", "--no-progress"])
    assert code == 0
    diag = json.loads((tmp_path / "cli" / "diagnostics.json").read_text())
    assert diag["counts"]["questions"] == 6  # both entries, not only the first
    assert diag["settings"]["max_model_len"] == 160  # min(sequence_len, model's)
    assert diag["counts"]["skipped_overlong"] > 0
    assert diag["counts"]["sampled"] > 0

    # the plugin's own functions on the same YAML: same settings, same rows
    from axolotl.utils.dict import DictDefault

    import axolotl_sealong.core.pipeline as pipeline
    from axolotl_sealong.integrations.axolotl.plugin import (
        _read_questions,
        label_settings,
    )

    cfg = DictDefault(yaml.safe_load(recipe.read_text()))
    plugin_cfg = label_settings(cfg)
    assert plugin_cfg.public_settings() == diag["settings"]
    rows = _read_questions(cfg)
    assert [r["question"] for r in rows] == [
        f"What is the capital of Zorvan{i}?" for i in range(6)
    ]

    def no_model(cfg):
        raise AssertionError("the CLI's labels did not warm the plugin's run")

    monkeypatch.setattr(pipeline, "_open_sampler", no_model)
    warm = pipeline.label(plugin_cfg, rows, tmp_path / "plugin", progress=False)
    assert warm.counts["cache_hits"] == diag["counts"]["sampled"]
    assert warm.counts["sampled"] == 0
