"""The GPU recipes' embedder without remote code: a tiny BAAI/bge-m3, offline: the slow
half (models, end-to-end runs); the fast half is tests/test_embedder_gpu_default.py.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from axolotl_sealong.embedding.embedder import (
    Embedder,
    check_embedder,
    needs_remote_code,
)

# BAAI/bge-m3 config.json as published, less the sizes (TINY below) and vocab.
BGE_M3_CONFIG: dict[str, Any] = {
    "architectures": ["XLMRobertaModel"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "classifier_dropout": None,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 8194,
    "model_type": "xlm-roberta",
    "output_past": True,
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "type_vocab_size": 1,
    "use_cache": True,
}


# real: hidden 1024, intermediate 4096, 16 heads, 24 layers, vocab 250002
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
}


BGE_M3_WINDOW = 8192  # sentence_bert_config.json max_seq_length of BAAI/bge-m3


OUTPUT_TOKENS = 1024  # the GPU recipes' sealong_max_new_tokens


def _xlmr_tokenizer(folder: Path, max_length: int) -> None:
    """A small XLM-R style tokenizer (unigram, <s> ... </s>) trained on nothing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = ["▁" + c for c in string.ascii_lowercase + string.digits]
    pieces += list(string.ascii_letters + string.digits + string.punctuation) + ["▁"]
    words = "the answer is step we read passage and note a fact therefore final"
    pieces += ["▁" + w for w in words.split()]
    vocab = [(t, 0.0) for t in ("<s>", "<pad>", "</s>", "<unk>")]
    vocab += [(p, -1.0 - i / 100) for i, p in enumerate(pieces)] + [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁")
    tok.decoder = decoders.Metaspace(replacement="▁")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length, **specials
    )
    fast.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "XLMRobertaTokenizer"  # as BAAI/bge-m3's
    config_path.write_text(json.dumps(config, indent=2))


def _write_st_layout(folder: Path, dim: int, window: int, pooling: str) -> None:
    modules = [
        ("", "sentence_transformers.models.Transformer"),
        ("1_Pooling", "sentence_transformers.models.Pooling"),
        ("2_Normalize", "sentence_transformers.models.Normalize"),
    ]
    layout = [
        {"idx": i, "name": str(i), "path": path, "type": kind}
        for i, (path, kind) in enumerate(modules)
    ]
    (folder / "modules.json").write_text(json.dumps(layout, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": window, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir()
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
    pool = {"word_embedding_dimension": dim}
    pool |= {f"pooling_mode_{m}": m == pooling for m in modes}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2))


def build_tiny_bge_m3(folder: Path, window: int = BGE_M3_WINDOW) -> Path:
    """A random-weight folder shaped like BAAI/bge-m3 (see the module docstring)."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    folder.mkdir(parents=True)
    _xlmr_tokenizer(folder, max_length=window)
    vocab = len(AutoTokenizer.from_pretrained(folder))
    settings = {k: v for k, v in BGE_M3_CONFIG.items() if k != "model_type"}
    torch.manual_seed(0)
    config = XLMRobertaConfig(**settings, **TINY, vocab_size=vocab)
    XLMRobertaModel(config).save_pretrained(folder)
    _write_st_layout(folder, TINY["hidden_size"], window, "cls_token")
    return folder


@pytest.fixture(scope="module")
def bge_m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bge_m3(tmp_path_factory.mktemp("gpu-default") / "bge-m3")


@pytest.fixture(scope="module")
def bge_m3(bge_m3_dir: Path) -> Embedder:
    return Embedder(str(bge_m3_dir))


def _output(tokenizer: Any, ending: str, tokens: int = OUTPUT_TOKENS) -> str:
    """A reasoning-like output of at most ``tokens`` tokens, ``ending`` last."""
    steps: list[str] = []
    tail = f" Therefore the final answer is {ending}."
    i = 0
    while True:
        step = f"Step {i}: we read passage {i} and note a fact."
        text = " ".join([*steps, step]) + tail
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) > tokens:
            return " ".join(steps) + tail
        steps.append(step)
        i += 1


def test_the_bge_m3_folder_is_laid_out_like_the_real_one(bge_m3, bge_m3_dir):
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import XLMRobertaModel

    config = json.loads((bge_m3_dir / "config.json").read_text())
    assert "auto_map" not in config
    assert config["model_type"] == "xlm-roberta"
    assert config["max_position_embeddings"] == 8194
    first, pooling, normalize = list(bge_m3.model)
    assert isinstance(first, Transformer) and isinstance(normalize, Normalize)
    assert type(first.auto_model) is XLMRobertaModel  # transformers' own class
    assert isinstance(pooling, Pooling)
    assert pooling.get_config_dict()["pooling_mode"] == "cls"
    assert bge_m3.model.tokenizer.model_max_length == BGE_M3_WINDOW


def test_bge_m3_needs_no_remote_code(bge_m3_dir, trust_remote_code_seen):
    assert needs_remote_code(str(bge_m3_dir)) is False
    assert check_embedder(str(bge_m3_dir)) == str(bge_m3_dir)  # no trust flag
    embedder = Embedder(str(bge_m3_dir))
    assert trust_remote_code_seen == [False]
    assert embedder.task is None  # no jina task kwarg for bge-m3


def test_a_1024_token_output_fits_one_bge_m3_window(bge_m3):
    tokenizer = bge_m3.model.tokenizer
    assert bge_m3.model.max_seq_length == BGE_M3_WINDOW
    assert bge_m3.window == BGE_M3_WINDOW - 2  # <s> and </s>
    paris, village = (_output(tokenizer, e) for e in ("Paris", "a small village"))
    n = len(tokenizer(paris, add_special_tokens=False)["input_ids"])
    assert OUTPUT_TOKENS - 20 <= n <= OUTPUT_TOKENS
    chunks, owner, weight = bge_m3.windows([paris, village])
    assert chunks == [paris, village] and owner == [0, 1]  # no chunking
    assert weight[0] == n
    vectors = bge_m3.encode([paris, village])
    assert vectors.shape == (2, TINY["hidden_size"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # one window holds the whole output: it is plain sentence-transformers
    # on the full text, and an ending past token 1000 changes the vector
    # (cut to a shorter window, both would be the same text: identical vectors)
    ref = bge_m3.model.encode([paris, village], normalize_embeddings=True)
    np.testing.assert_allclose(vectors, ref, atol=1e-5)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-7


def test_the_window_check_can_fail_on_a_short_window_model(tmp_path, bge_m3):
    """The same output is chunked by a 512-token model: the window matters."""
    short = build_tiny_bge_m3(tmp_path / "short", window=512)
    embedder = Embedder(str(short))
    assert embedder.model.max_seq_length == 512
    text = _output(bge_m3.model.tokenizer, "Paris")
    chunks, _, weight = embedder.windows([text])
    assert len(chunks) == 2 and weight == [510, sum(weight) - 510]  # 510 + the rest
    head = Embedder(str(short), long_text="head")  # cut at 512: endings unseen
    a, b = head.encode([text, _output(bge_m3.model.tokenizer, "a small village")])
    np.testing.assert_array_equal(a, b)


def test_the_native_jina_v3_port_loads_without_remote_code(tmp_path, bge_m3_dir):
    """transformers 5 ships ``jina_embeddings_v3``: no auto_map, no trust flag."""
    import torch
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    folder = tmp_path / "jina-embeddings-v3-hf"  # the name must not matter
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bge_m3_dir / name, folder / name)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    torch.manual_seed(0)
    config = JinaEmbeddingsV3Config(**TINY, vocab_size=len(vocab))
    JinaEmbeddingsV3Model(config).save_pretrained(folder)
    _write_st_layout(folder, TINY["hidden_size"], 8194, "mean_tokens")
    assert needs_remote_code(str(folder)) is False
    embedder = Embedder(str(folder))
    assert type(embedder.model[0].auto_model) is JinaEmbeddingsV3Model
    assert embedder.task is None
    vectors = embedder.encode(["The answer is Paris.", "It is Rome."])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
