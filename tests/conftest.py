"""Shared fixtures: a tiny tokenizer and a tiny random Llama, built offline.

Nothing here touches the network: the tokenizer is trained in-process on a few
sentences and the model is built from a config.
"""

from __future__ import annotations

import os
from pathlib import Path

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
def gpu_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty ``flash_attn`` and ``deepspeed`` packages first on sys.path.

    The plugin only asks ``importlib.util.find_spec`` whether they are installed
    (it imports neither), and an empty package is what find_spec sees of an
    installed one. Axolotl's schema validation imports neither either; with
    ``deepspeed:`` its ``load_cfg`` would, which is why these tests call
    ``prepare_plugins`` + ``validate_config`` and not ``load_cfg``.
    """
    for name in ("flash_attn", "deepspeed"):
        (tmp_path / "fake_site" / name).mkdir(parents=True)
        (tmp_path / "fake_site" / name / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "fake_site"))
    return tmp_path / "fake_site"
