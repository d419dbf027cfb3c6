"""Sentence embeddings for the MBR similarity (sentence-transformers).

``embedder`` loads the embedding model and embeds the samples; it imports only
``core`` helpers (the embedded default model) and nothing of ``sampling``,
``integrations``, ``cli``, ``demo`` or ``bench``.
"""
