"""`axolotl preprocess` / `axolotl train` for real, in a subprocess, on CPU.

A tiny random Llama built from a config is both the sampling and the training
model; the questions are a few short long-context-style rows. Nothing is mocked.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from builders import e2e_recipe

AXOLOTL = shutil.which("axolotl") or str(Path(sys.executable).parent / "axolotl")
pytestmark = pytest.mark.skipif(
    not Path(AXOLOTL).exists(), reason="axolotl CLI not installed"
)


def _load_cfg(path: Path):
    """Axolotl's own config loading (plugins registered, schema merged), in-process."""
    from axolotl.cli.config import load_cfg

    return load_cfg(str(path))


def test_bad_key_is_caught_at_config_validation(tiny_llama_dir, tmp_path):
    recipe = e2e_recipe(tmp_path, tiny_llama_dir, "orpo", sealong_num_samples=1)
    with pytest.raises(
        Exception, match=r"sealong_num_samples \(--num-samples\) = 1: num_samples must"
    ):
        _load_cfg(recipe)
    typo = e2e_recipe(tmp_path, tiny_llama_dir, "orpo", sealong_num_sample=8)
    with pytest.raises(
        Exception,
        match=r"unknown setting.*sealong_num_sample \(did you mean sealong_num_samples",
    ):
        _load_cfg(typo)
    cfg = _load_cfg(e2e_recipe(tmp_path, tiny_llama_dir, "orpo"))
    assert cfg.sealong_num_samples == 3  # declared keys survive validation


def test_mode_without_matching_rl_is_refused(tiny_llama_dir, tmp_path):
    recipe = e2e_recipe(tmp_path, tiny_llama_dir, "sft", sealong_mode="orpo")
    with pytest.raises(Exception, match="sealong_mode: orpo does not match rl"):
        _load_cfg(recipe)
