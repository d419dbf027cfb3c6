"""The GPU recipes' embedder without remote code: a tiny BAAI/bge-m3, offline.

BAAI/bge-m3 cannot be downloaded here, so the folder below is built the way
the real one is laid out: transformers' own ``XLMRobertaModel`` (config.json
as on the hub, no ``auto_map``), sentence-transformers modules Transformer ->
CLS Pooling -> Normalize, ``max_seq_length`` 8192 in sentence_bert_config.json
and an XLM-R tokenizer with ``model_max_length`` 8192. Only the sizes are tiny
(and the vocabulary, trained here). Real transformers and sentence-transformers
load and run it; nothing is mocked.

It also checks the name rules around jina-embeddings-v3: only the remote-code
model needs ``embedder_trust_remote_code`` and gets ``task="text-matching"``;
transformers' native port (``jinaai/jina-embeddings-v3-hf``) needs neither.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from axolotl_sealong.embedding.embedder import (
    check_embedder,
    default_task,
    needs_remote_code,
)


# --------------------------------------------------------------------------- #
# jina-embeddings-v3: the remote-code model vs transformers' native port
# --------------------------------------------------------------------------- #
def test_only_the_remote_code_jina_v3_needs_trust_and_a_task():
    assert needs_remote_code("jinaai/jina-embeddings-v3") is True
    assert needs_remote_code("JinaAI/jina-embeddings-v3/") is True
    assert default_task("jinaai/jina-embeddings-v3") == "text-matching"
    # the native port runs no remote code and takes no task (not cached here)
    assert needs_remote_code("jinaai/jina-embeddings-v3-hf") is False
    assert default_task("jinaai/jina-embeddings-v3-hf") is None


def _cache_repo(cache: Path, repo: str, config: dict[str, Any]) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    (snapshot / "modules.json").write_text("[]")


def test_a_cached_hub_embedder_with_auto_map_needs_the_trust_flag(
    tmp_path, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    lora = "acme--modeling_lora.XLMRobertaLoRA"
    _cache_repo(tmp_path, "acme/remote-embedder", {"auto_map": {"AutoModel": lora}})
    _cache_repo(tmp_path, "acme/plain-embedder", {"model_type": "xlm-roberta"})
    assert needs_remote_code("acme/remote-embedder") is True
    assert default_task("acme/remote-embedder") == "text-matching"
    assert needs_remote_code("acme/plain-embedder") is False
    assert default_task("acme/plain-embedder") is None
    with pytest.raises(ValueError, match="embedder_trust_remote_code: true"):
        check_embedder("acme/remote-embedder")
    assert check_embedder("acme/remote-embedder", True) == "acme/remote-embedder"
    assert check_embedder("acme/plain-embedder") == "acme/plain-embedder"
