"""Sentence embeddings for the MBR similarity (sentence-transformers).

``embedder`` loads the embedding model and embeds the samples; it imports only
the bottom layer (``common``: the embedded default model, names checked before
loading) and nothing of ``core``, ``sampling``, ``data``, ``integrations``,
``cli``, ``demo`` or ``bench``.
"""

from __future__ import annotations

# How the embedder treats outputs longer than its window (embedder.py
# implements them; the settings validate against this list).
LONG_TEXT_RULES: tuple[str, ...] = ("chunk_mean", "tail", "head")
