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
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from axolotl_sealong.embedded import EMBEDDED_EMBEDDER, resolve_model

LOG = logging.getLogger(__name__)

LONG_TEXT_RULES: tuple[str, ...] = ("chunk_mean", "tail", "head")
JINA_V3 = "jinaai/jina-embeddings-v3"


def check_embedder(name_or_path: str) -> str:
    """Resolve and check an embedder before any sampling is spent.

    Returns the local path or hub id to load. Raises ``FileNotFoundError``
    naming the setting when a path does not exist, or when the hub is offline
    and the id is not in the local cache.
    """
    resolved = resolve_model(name_or_path)
    path = Path(resolved).expanduser()
    looks_like_path = (
        resolved.startswith((".", "/", "~")) or path.exists() or resolved.count("/") > 1
    )
    if looks_like_path:
        if not path.is_dir():
            raise FileNotFoundError(
                f"embedder {name_or_path!r} is not a folder: set `embedder` "
                f"(sealong_embedder) to a sentence-transformers folder, a hub id, "
                f"or {EMBEDDED_EMBEDDER!r}"
            )
        return str(path)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(resolved, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - any miss means "not cached"
            raise FileNotFoundError(
                f"embedder {resolved!r} is not in the local Hugging Face cache and "
                f"HF_HUB_OFFLINE is set: download it first, point `embedder` at a "
                f"local folder, or use {EMBEDDED_EMBEDDER!r}"
            ) from err
    return resolved


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
    ) -> None:
        if long_text not in LONG_TEXT_RULES:
            raise ValueError(
                f"unknown long-text rule {long_text!r}: use one of "
                f"{', '.join(LONG_TEXT_RULES)}"
            )
        from sentence_transformers import SentenceTransformer

        self.name = name_or_path
        path = check_embedder(name_or_path)
        remote = JINA_V3 in path or "jina" in path.lower()
        self.model = SentenceTransformer(path, device=device, trust_remote_code=remote)
        if task is None and remote:
            task = "text-matching"  # what the paper's code passes to jina v3
        self.task = task
        self.batch_size = batch_size
        self.long_text = long_text
        limit = max_tokens or self.model.max_seq_length or 512
        self.max_tokens = int(limit)
        # Room for [CLS]/[SEP]-style specials that encode() adds to every window.
        specials = self.model.tokenizer.num_special_tokens_to_add(pair=False)
        self.window = max(8, self.max_tokens - specials)

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
