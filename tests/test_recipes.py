"""Every recipe validates against Axolotl's schema with the plugin merged.

GPU recipes are validated as a GPU node would see them (capabilities of an
8x H100 node passed to Axolotl's validator), not run: this machine has no GPU.
That node has the [gpu] extra's packages; this machine has neither flash-attn
nor deepspeed, so ``gpu_packages`` (conftest.py) stands in for them
(tests/test_requirements.py tests what happens without them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from builders import CPU_NODE, H100_NODE, ROOT, validate

RECIPES = sorted((ROOT / "recipes").glob("*.yml"))


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {
        "llama31_8b_orpo.yml",
        "llama31_8b_sft.yml",
        "qwen25_7b_orpo.yml",
        "llama31_8b_orpo_8gpu_zero3.yml",
        "smollm2_135m_orpo_cpu.yml",
    } <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_validates_with_the_plugin(recipe, monkeypatch, gpu_packages):
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.dict import DictDefault

    monkeypatch.chdir(recipe.parents[1])  # deepspeed paths are repo-relative
    raw = yaml.safe_load(recipe.read_text())
    cfg = DictDefault(raw)
    prepare_plugins(cfg)
    gpu = "cpu" not in recipe.name
    out = validate(cfg, H100_NODE if gpu else CPU_NODE)
    # the plugin's keys survived validation with the recipe's values
    for key, value in raw.items():
        if key.startswith("sealong_"):
            assert out[key] == value, key
    assert out["datasets"][0]["type"] == "axolotl_sealong.self_label"
    if not gpu:
        assert Path(out["base_model"]).is_dir()  # embedded: resolved to a folder
        assert out["bf16"] is False and out["fp16"] is False


def test_recipes_list_and_copy(tmp_path, capsys):
    from axolotl_sealong.cli.main import main

    assert main(["recipes", "list"]) == 0
    listing = capsys.readouterr().out
    for path in RECIPES:
        assert path.stem in listing
    assert main(["recipes", "copy", "llama31_8b_orpo_8gpu_zero3", str(tmp_path)]) == 0
    copied = yaml.safe_load((tmp_path / "llama31_8b_orpo_8gpu_zero3.yml").read_text())
    assert Path(copied["deepspeed"]).is_file()  # rewritten to the copied config
    assert main(["recipes", "copy", "nope", str(tmp_path)]) == 2
    assert "smollm2_135m_orpo_cpu" in capsys.readouterr().err


def test_gpu_recipes_sample_with_the_managed_vllm_server():
    """vLLM runs as a server the plugin starts and stops (issue 13), not in the
    trainer's process, so any vLLM can serve beside axolotl 0.19."""
    gpu = [p for p in RECIPES if "cpu" not in p.name]
    assert len(gpu) == 4
    for recipe in gpu:
        raw = yaml.safe_load(recipe.read_text())
        assert raw["sealong_sampler"] == "vllm_server", recipe.name
        assert "scripts/setup_vllm.sh" in recipe.read_text()


def test_readme_help_and_recipes_agree_on_the_gpu_install():
    """One vLLM range (pyproject's [vllm] extra), one install per environment.

    The install lines are requirements.py's (the plugin's missing-package error
    names the same ones); the torch each path installs first must be the one
    that stays: vLLM's pin for one environment (docs/results/compat/vllm_range.txt),
    within axolotl's range for the trainer alone.
    """
    import re
    import tomllib
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.version import Version

    from axolotl_sealong.cli.main import build_parser
    from axolotl_sealong.integrations.axolotl.requirements import (
        GPU_EXTRA_INSTALL,
        INSTALL_ONE_ENV,
        INSTALL_TRAINER,
        TORCH_ONE_ENV,
        TORCH_TRAINER,
    )

    root = RECIPES[0].parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())
    extras = extras["project"]["optional-dependencies"]
    (spec,) = extras["vllm"]
    low, high = re.fullmatch(r"vllm>=([\d.]+),<([\d.]+)", spec).groups()
    # the last release under the bound, as docs/results/compat/vllm_range.txt found it
    found = (root / "docs/results/compat/vllm_range.txt").read_text()
    ok = re.findall(r"^vllm ([\d.]+): ok", found, re.M)
    assert ok[0] == low and ok[-1].split(".")[:2] < high.split(".")[:2]
    # every release of the range, and the extra itself, resolved with this torch
    assert set(re.findall(r"^vllm [\d.]+: ok torch==([\d.]+)", found, re.M)) == {
        TORCH_ONE_ENV
    }
    assert f"torch=={TORCH_ONE_ENV}" in found.splitlines()[-1]
    axolotl_torch = next(
        Requirement(r) for r in requires("axolotl") or [] if r.startswith("torch")
    )
    assert Version(TORCH_TRAINER) in axolotl_torch.specifier
    # [gpu] is axolotl's own flash-attn + deepspeed extras, at our axolotl range
    (gpu,) = extras["gpu"]
    base = next(d for d in extras_deps(root) if d.startswith("axolotl"))
    assert gpu == base.replace("axolotl", "axolotl[flash-attn,deepspeed]", 1)
    assert GPU_EXTRA_INSTALL == INSTALL_TRAINER[1]

    words = f"{low}-{ok[-1]}"
    readme = (root / "README.md").read_text()
    install_doc = (root / "docs/install.md").read_text()
    helptext = build_parser().epilog or ""  # `sealong --help` ends with it
    recipes = [p.read_text() for p in RECIPES if "cpu" not in p.name]
    assert len(recipes) == 4
    for text in [readme, install_doc, helptext, *recipes]:
        assert words in text
        for line in INSTALL_ONE_ENV:
            assert line in text
        assert "scripts/setup_vllm.sh" in text and "SEALONG_VLLM_SPEC" in text
        assert f"torch=={TORCH_TRAINER}" in text
        assert '"axolotl-sealong[gpu]"' in text
        assert 'pip install "axolotl-sealong[vllm]"' not in text  # the old line
    for text in [readme, install_doc, helptext]:  # the trainer alone, in full
        for line in INSTALL_TRAINER:
            assert line in text
    assert "vllm_server" in helptext and "scripts/gpu_check.sh" in readme


def extras_deps(root: Path) -> list[str]:
    import tomllib

    return tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]


def test_gpu_recipes_state_their_global_batch():
    """sealong_global_batch_size is what one launch of the recipe as written
    trains with (ZeRO-3: its 8 GPUs; the others: one process)."""
    for recipe in RECIPES:
        raw = yaml.safe_load(recipe.read_text())
        ranks = 8 if "8gpu" in recipe.name else 1
        per_update = (
            ranks * raw["micro_batch_size"] * raw["gradient_accumulation_steps"]
        )
        assert raw["sealong_global_batch_size"] == per_update, recipe.name
        if "cpu" not in recipe.name:
            assert per_update == 64  # the reference code's pairs per update
            assert raw["attn_implementation"] == "flash_attention_2"
            assert "flash_attention" not in raw  # deprecated in axolotl 0.19
            text = recipe.read_text()
            if ranks == 1:
                assert (
                    f"CUDA_VISIBLE_DEVICES=0 axolotl train recipes/{recipe.name}"
                    in (text)
                )
    sft = yaml.safe_load((RECIPES[0].parent / "llama31_8b_sft.yml").read_text())
    assert sft["chunked_cross_entropy"] is True and "rl" not in sft
