"""Every recipe validates against Axolotl's schema with the plugin merged.

GPU recipes are validated as a GPU node would see them (capabilities of an
8x H100 node passed to Axolotl's validator), not run: this machine has no GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yml"))
H100_NODE = {
    "bf16": True,
    "fp8": True,
    "tf32": True,
    "n_gpu": 8,
    "compute_capability": "sm_90",
}


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
def test_recipe_validates_with_the_plugin(recipe, monkeypatch):
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    monkeypatch.chdir(recipe.parents[1])  # deepspeed paths are repo-relative
    raw = yaml.safe_load(recipe.read_text())
    cfg = DictDefault(raw)
    prepare_plugins(cfg)
    gpu = "cpu" not in recipe.name
    caps = (
        H100_NODE
        if gpu
        else {
            "bf16": False,
            "fp8": False,
            "tf32": False,
            "n_gpu": 1,
            "compute_capability": None,
        }
    )
    out = validate_config(
        cfg, capabilities=caps, env_capabilities={"torch_version": "2.13.0"}
    )
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
    """One vLLM range (pyproject's [vllm] extra), one way to each environment."""
    import re
    import tomllib

    from axolotl_sealong.cli.main import build_parser

    root = RECIPES[0].parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())
    (spec,) = extras["project"]["optional-dependencies"]["vllm"]
    low, high = re.fullmatch(r"vllm>=([\d.]+),<([\d.]+)", spec).groups()
    # the last release under the bound, as docs/compat/vllm_range.txt found it
    ok = re.findall(
        r"^vllm ([\d.]+): ok", (root / "docs/compat/vllm_range.txt").read_text(), re.M
    )
    assert ok[0] == low and ok[-1].split(".")[:2] < high.split(".")[:2]
    words = f"{low}-{ok[-1]}"
    readme = (root / "README.md").read_text()
    helptext = build_parser().epilog or ""  # `sealong --help` ends with it
    gpu = [p for p in RECIPES if "cpu" not in p.name]
    for text in [readme, helptext, *(p.read_text() for p in gpu)]:
        assert words in text
        assert 'pip install "axolotl-sealong[vllm]"' in text
        assert "scripts/setup_vllm.sh" in text and "SEALONG_VLLM_SPEC" in text
    assert "vllm_server" in helptext and "scripts/gpu_check.sh" in readme
