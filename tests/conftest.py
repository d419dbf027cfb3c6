"""Shared fixtures: a tiny tokenizer and a tiny random Llama, built offline.

Nothing here touches the network: the tokenizer is trained in-process on a few
sentences and the model is built from a config.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from axolotl_sealong.bench.tiny import build_tiny_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tiny_causal_lm(
    path: Path, family: str = "llama", max_positions: int = 8192, **overrides
) -> Path:
    """A 2-layer random causal LM of a README family (llama, qwen2, mistral).

    Real transformers code, seconds to run on CPU; ``overrides`` go to the
    config (e.g. ``sliding_window`` for Mistral).
    """
    import torch
    import transformers
    from transformers import AutoTokenizer

    classes = {
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
        "mistral": ("MistralConfig", "MistralForCausalLM"),
    }
    config_cls, model_cls = (getattr(transformers, n) for n in classes[family])
    build_tiny_tokenizer(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if family == "mistral":
        settings["sliding_window"] = None  # full attention unless overridden
    config = config_cls(**{**settings, **overrides})
    torch.manual_seed(0)
    model = model_cls(config)
    model.save_pretrained(path)
    return path


def build_tiny_llama(path: Path, max_positions: int = 8192) -> Path:
    """A 2-layer random Llama: real transformers code, seconds to run on CPU."""
    return build_tiny_causal_lm(path, "llama", max_positions)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture
def fake_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``fake_packages("flash_attn", ...)``: empty packages first on sys.path.

    The plugin only asks ``importlib.util.find_spec`` whether flash-attn and
    deepspeed are installed (it imports neither), and an empty package is what
    find_spec sees of an installed one. transformers does import ``flash_attn``
    once, when ``transformers.integrations.flash_attention`` is first imported
    (to probe it): that happens here first, with the real packages, and any
    fake module that gets imported is dropped from ``sys.modules`` afterwards,
    so later tests see this machine as it is.
    """
    import transformers.integrations.flash_attention  # noqa: F401

    root = tmp_path / "fake_site"

    def make(*names: str) -> Path:
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(root))
        return root

    yield make
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(root)):
            del sys.modules[name]


@pytest.fixture
def gpu_packages(fake_packages: Any) -> Path:
    """The [gpu] extra's packages as a GPU node has them (``fake_packages``).
    Axolotl's schema validation runs with them; ``load_cfg`` with
    ``deepspeed:`` would import deepspeed, which is why the recipe tests call
    ``prepare_plugins`` + ``validate_config`` and not ``load_cfg``."""
    return fake_packages("flash_attn", "deepspeed")
