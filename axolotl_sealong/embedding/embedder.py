"""Sentence embeddings for MBR, without silently cutting long outputs.

Reasoning outputs end with the answer, and sentence-transformers truncates each
text to the model's window from the *start* (256 tokens for all-MiniLM-L6-v2).
So by default a long text is split into consecutive windows that each fit,
every window is embedded, and the text's vector is the token-weighted mean of
its unit window vectors, normalised again ("chunk_mean"). "tail" keeps only the
last window; "head" is sentence-transformers' plain truncation, kept only so
the rules can be compared. All windows of all texts go through one batched
``encode`` call, whatever question they belong to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from axolotl_sealong.common.models import EMBEDDED_EMBEDDER, check_model_source
from axolotl_sealong.embedding import LONG_TEXT_RULES

LOG = logging.getLogger(__name__)

JINA_V3 = "jinaai/jina-embeddings-v3"


def check_embedder(name_or_path: str, trust_remote_code: bool = False) -> str:
    """Resolve and check an embedder before any sampling is spent.

    Returns the local path or hub id to load. A missing folder, a folder that
    is no model, an unknown ``embedded:`` name, a hub id the offline hub does
    not have, or an embedder that runs its own code (jina-embeddings-v3, or
    any whose config.json, local or cached, has an ``auto_map``) without
    ``embedder_trust_remote_code`` raises an error naming the setting.
    """
    setting = "embedder (sealong_embedder / --embedder)"
    resolved = check_model_source(
        name_or_path,
        setting,
        needs=("modules.json", "config.json"),
        what="a sentence-transformers folder",
    )
    if needs_remote_code(resolved) and not trust_remote_code:
        raise ValueError(
            f"{setting} {name_or_path!r} runs code from its repository "
            "(trust_remote_code): set embedder_trust_remote_code: true "
            "(sealong_embedder_trust_remote_code / --embedder-trust-remote-code "
            "true) if you trust it, or use one that needs no remote code "
            "(e.g. BAAI/bge-m3, see docs/labeling.md)"
        )
    return resolved


def needs_remote_code(name_or_path: str) -> bool:
    """Whether the model's code lives in its repository (``auto_map``).

    The hub id ``jinaai/jina-embeddings-v3`` does, cached or not. Otherwise
    the model's config.json decides: a local folder's, or a hub id's copy in
    the local Hugging Face cache. A name alone never does: transformers'
    native port ``jinaai/jina-embeddings-v3-hf`` runs no remote code.
    """
    if _is_jina_v3_id(name_or_path):
        return True
    config = _read_config(name_or_path)
    return config is not None and "auto_map" in config


def default_task(name_or_path: str) -> str | None:
    """The ``task`` the paper's code passes: "text-matching" for jina v3 only.

    Only the remote-code jina-embeddings-v3 (the hub id, or a copy whose
    config maps AutoModel to its ``XLMRobertaLoRA``) takes a ``task``; other
    embedders, the native ``-hf`` port included, get none.
    """
    if _is_jina_v3_id(name_or_path):
        return "text-matching"
    config = _read_config(name_or_path) or {}
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and str(auto_map.get("AutoModel", "")).endswith(
        "XLMRobertaLoRA"
    ):
        return "text-matching"
    return None


def _is_jina_v3_id(name: str) -> bool:
    return name.strip().rstrip("/").lower() == JINA_V3


def _read_config(name_or_path: str) -> dict[str, Any] | None:
    """config.json of a local folder, or of a hub id in the local cache."""
    import json

    folder = Path(name_or_path).expanduser()
    config: Path | None = folder / "config.json"
    if not folder.is_dir():
        config = None
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_path, "config.json")
        except Exception:  # noqa: BLE001 - not a hub id, or no cache: no config
            cached = None
        if isinstance(cached, str):
            config = Path(cached)
    if config is None or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


class Embedder:
    """A sentence-transformers model plus the long-text rule."""

    def __init__(
        self,
        name_or_path: str = EMBEDDED_EMBEDDER,
        *,
        device: str | None = None,
        batch_size: int = 64,
        long_text: str = "chunk_mean",
        task: str | None = None,
        max_tokens: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if long_text not in LONG_TEXT_RULES:
            raise ValueError(
                f"unknown long-text rule {long_text!r}: use one of "
                f"{', '.join(LONG_TEXT_RULES)}"
            )
        from sentence_transformers import SentenceTransformer

        self.name = name_or_path
        path = check_embedder(name_or_path, trust_remote_code)
        # code from the embedder's repository runs only when asked for
        # (embedder_trust_remote_code), never because of a name
        self.model = SentenceTransformer(
            path, device=device, trust_remote_code=trust_remote_code
        )
        if task is None:
            task = default_task(path)  # "text-matching" for jina v3, as the paper
        self.task = task
        self.batch_size = batch_size
        self.long_text = long_text
        limit = max_tokens or self.model.max_seq_length or 512
        self.max_tokens = int(limit)
        # Room for [CLS]/[SEP]-style specials that encode() adds to every window.
        specials = self.model.tokenizer.num_special_tokens_to_add(pair=False)
        self.window = max(8, self.max_tokens - specials)

    def to_default_device(self) -> Embedder:
        """Move to where a plain load would have put it (a GPU if there is
        one); the embedder checked on the CPU before sampling is reused."""
        import torch

        if torch.cuda.is_available():
            self.model.to("cuda")
        return self

    def windows(self, texts: Sequence[str]) -> tuple[list[str], list[int], list[int]]:
        """Split texts into windows; returns windows, owner index, token count."""
        enc = self.model.tokenizer(
            list(texts),
            add_special_tokens=False,
            return_offsets_mapping=True,
            verbose=False,  # long texts are expected: we window them below
        )
        chunks: list[str] = []
        owner: list[int] = []
        weight: list[int] = []
        for i, (text, offsets) in enumerate(
            zip(texts, enc["offset_mapping"], strict=True)
        ):
            n = len(offsets)
            if n <= self.window or self.long_text == "head":
                spans = [(0, n)]
            elif self.long_text == "tail":
                spans = [(n - self.window, n)]
            else:
                spans = [(s, min(s + self.window, n)) for s in range(0, n, self.window)]
            for start, end in spans:
                if n == 0:
                    piece = text
                elif self.long_text == "head" or (start == 0 and end == n):
                    piece = text
                else:
                    piece = text[offsets[start][0] : offsets[end - 1][1]]
                chunks.append(piece)
                owner.append(i)
                weight.append(max(end - start, 1))
        return chunks, owner, weight

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Unit vectors, one row per text, from one batched encode call."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        chunks, owner, weight = self.windows(texts)
        kwargs: dict[str, Any] = {}
        if self.task:
            kwargs["task"] = self.task
        vecs = self.model.encode(
            chunks,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
            **kwargs,
        )
        out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float64)
        np.add.at(out, np.asarray(owner), vecs * np.asarray(weight)[:, None])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms == 0.0, 1.0, norms)).astype(np.float32)
