"""A recipe whose packages are missing stops at config load with our message.

flash-attn and deepspeed are really absent from this machine (each test that
relies on it says so first). It has no GPU either: where the GPU matters,
``torch.cuda.is_available`` is monkeypatched to True (simulated), since the
plugin requires flash-attn only where a CUDA GPU is visible
(``requirements.py`` explains why). Recipes load through Axolotl's own loader.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from axolotl_sealong.integrations.axolotl.requirements import (
    GPU_EXTRA_INSTALL,
    check_training_requirements,
    training_requirements,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
GPU_RECIPES = sorted(p for p in RECIPES.glob("*.yml") if "cpu" not in p.name)
H100_NODE = {
    "bf16": True,
    "fp8": True,
    "tf32": True,
    "n_gpu": 8,
    "compute_capability": "sm_90",
}


def _absent(*packages: str) -> None:
    for package in packages:
        if importlib.util.find_spec(package) is not None:
            pytest.skip(f"{package} is installed here: this test needs it absent")


def _simulate_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no GPU: make torch say it has one (the plugin asks
    ``torch.cuda.is_available()`` at register time, as Axolotl does).

    What the loader imports is imported first, with torch's real answer:
    bitsandbytes (through peft) picks its CUDA or CPU backend at import time.
    """
    import axolotl.integrations.base  # noqa: F401
    import torch

    import axolotl_sealong.integrations.axolotl.plugin  # noqa: F401

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=[p.name for p in GPU_RECIPES])
def test_gpu_recipe_without_flash_attn_fails_at_load_with_our_message(
    recipe, monkeypatch
):
    from axolotl.cli.config import load_cfg

    _absent("flash_attn")
    _simulate_gpu(monkeypatch)
    monkeypatch.chdir(ROOT)  # the ZeRO-3 recipe's deepspeed path is repo-relative
    with pytest.raises(ValueError) as err:
        load_cfg(str(recipe))
    message = str(err.value)
    assert "attn_implementation: flash_attention_2 needs the flash_attn package" in (
        message
    )
    assert GPU_EXTRA_INSTALL in message
    assert "set attn_implementation: sdpa" in message
    assert sys.executable in message  # which environment lacks it
    if "zero3" in recipe.name:  # both missing: both named, in one error
        assert message.startswith("2 packages this recipe needs are missing")
        assert (
            "deepspeed: recipes/deepspeed/zero3_bf16.json needs the deepspeed package"
            in message
        )


def test_zero3_recipe_without_deepspeed_fails_even_without_a_gpu(monkeypatch):
    """Axolotl's load_cfg imports deepspeed with `deepspeed:` set, GPU or not
    (preprocess too), so the plugin asks for it regardless."""
    from axolotl.cli.config import load_cfg

    _absent("deepspeed")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU box
    monkeypatch.chdir(ROOT)
    with pytest.raises(ValueError) as err:
        load_cfg(str(RECIPES / "llama31_8b_orpo_8gpu_zero3.yml"))
    message = str(err.value)
    assert message.startswith(
        "deepspeed: recipes/deepspeed/zero3_bf16.json needs the deepspeed package,"
    )
    assert GPU_EXTRA_INSTALL in message and "remove deepspeed:" in message
    assert "flash_attn" not in message  # no GPU: flash-attn not required here


def test_without_a_gpu_flash_attn_is_not_required(monkeypatch):
    """The decision in requirements.py: a CPU-only box may preprocess for a GPU
    node, as Axolotl's own flash-attn check allows."""
    import torch
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.dict import DictDefault

    _absent("flash_attn")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = DictDefault(yaml.safe_load((RECIPES / "llama31_8b_orpo.yml").read_text()))
    prepare_plugins(cfg)  # does not raise
    # ...while the same recipe on a (simulated) GPU does
    _simulate_gpu(monkeypatch)
    with pytest.raises(ValueError, match="needs the flash_attn package on a GPU"):
        prepare_plugins(cfg)


def test_deferred_lets_a_caller_load_the_recipe_and_report_itself(monkeypatch):
    """``sealong check`` loads a recipe under ``deferred()`` and lists the
    packages in its own report; outside it the hook checks again."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.dict import DictDefault

    from axolotl_sealong.integrations.axolotl.requirements import deferred

    _absent("flash_attn", "deepspeed")
    _simulate_gpu(monkeypatch)
    monkeypatch.chdir(ROOT)
    recipe = RECIPES / "llama31_8b_orpo_8gpu_zero3.yml"
    with deferred():
        prepare_plugins(DictDefault(yaml.safe_load(recipe.read_text())))
    with pytest.raises(ValueError, match="2 packages this recipe needs are missing"):
        prepare_plugins(DictDefault(yaml.safe_load(recipe.read_text())))


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=[p.name for p in GPU_RECIPES])
def test_gpu_recipe_with_the_packages_present_validates(
    recipe, fake_packages, monkeypatch
):
    """With flash_attn and deepspeed "installed" (empty packages: conftest's
    ``fake_packages``) the plugin's check passes on a simulated GPU, and the
    recipe validates against Axolotl's schema for an 8x H100 node. Axolotl's own
    flash-attn probe runs only under a real GPU (it needs a real build), so the
    schema validation runs with torch's real answer, False here."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    fake_packages("flash_attn", "deepspeed")
    monkeypatch.chdir(ROOT)
    cfg = DictDefault(yaml.safe_load(recipe.read_text()))
    with monkeypatch.context() as m:
        _simulate_gpu(m)
        prepare_plugins(cfg)
        assert all(r.importable for r in training_requirements(cfg))
    out = validate_config(
        cfg, capabilities=H100_NODE, env_capabilities={"torch_version": "2.13.0"}
    )
    assert out["attn_implementation"] == "flash_attention_2"
    # the validated config names the same requirements as the raw YAML
    assert [r.package for r in training_requirements(out)] == [
        r.package for r in training_requirements(cfg)
    ]


def test_requirements_follow_axolotls_attention_keys():
    """Raw YAML (legacy flags, in Axolotl's priority order) and explicit values."""

    def needs(cfg):
        return [(r.package, r.needed_for) for r in training_requirements(cfg)]

    assert needs({"flash_attention": True}) == [("flash_attn", "flash_attention: true")]
    assert needs({"attn_implementation": "flash_attention_2"}) == [
        ("flash_attn", "attn_implementation: flash_attention_2")
    ]
    assert needs({"attn_implementation": "flash_attention_3"}) == [
        ("flash_attn_interface", "attn_implementation: flash_attention_3")
    ]
    for none in (
        {},
        {"flash_attention": False},
        {"attn_implementation": "sdpa"},
        {"attn_implementation": "kernels-community/flash-attn2"},  # hub: unchecked
        {"sdp_attention": True},
        # Axolotl ranks xformers_attention before flash_attention
        {"xformers_attention": True, "flash_attention": True},
    ):
        assert needs(none) == [], none
    assert needs({"deepspeed": {"zero_optimization": {"stage": 3}}}) == [
        ("deepspeed", "deepspeed: {...}")
    ]
    (legacy,) = training_requirements({"flash_attention": True})
    assert legacy.alternative.startswith(
        "replace flash_attention: true with attn_implementation: sdpa"
    )
    assert legacy.only_with_cuda


def test_check_passes_when_nothing_is_needed_or_all_is_there(fake_packages):
    check_training_requirements({"attn_implementation": "sdpa"}, cuda=True)
    check_training_requirements({}, cuda=True)
    fake_packages("flash_attn", "deepspeed")
    check_training_requirements(
        {"flash_attention": True, "deepspeed": "ds.json"}, cuda=True
    )
