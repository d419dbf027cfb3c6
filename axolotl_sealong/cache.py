"""Append-only sample cache: finished questions survive any crash.

Samples are the expensive part, so each question's N samples are appended to
``samples.jsonl`` (flushed and fsynced) the moment they exist. The folder name
is a hash of everything that changes the samples; a different model, prompt,
sampling setting, seed or data set gets a different folder, so stale samples
are never reused. Scoring is cheap and is redone from the cache on every run.
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

CACHE_VERSION = 1


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


class SampleStore:
    """One cache folder: ``meta.json`` (what the key covers) + ``samples.jsonl``."""

    def __init__(self, root: Path, key_parts: dict[str, Any]) -> None:
        self.key_parts = {"cache_version": CACHE_VERSION, **key_parts}
        self.key = stable_hash(self.key_parts)
        self.dir = Path(root) / self.key
        self.samples_path = self.dir / "samples.jsonl"

    def load(self) -> dict[str, list[str]]:
        """Finished questions; a line torn by a crash is ignored (and rewritten)."""
        done: dict[str, list[str]] = {}
        if not self.samples_path.exists():
            return done
        torn = 0
        with self.samples_path.open("r", encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    done[rec["key"]] = list(rec["samples"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    torn += 1
        if torn:
            LOG.warning("cache %s: ignored %d torn line(s)", self.samples_path, torn)
            self._rewrite(done)
        return done

    def _rewrite(self, done: dict[str, list[str]]) -> None:
        from axolotl_sealong.data.io import write_jsonl

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
