"""Row files: streaming readers and atomic JSONL/parquet writers.

The bottom of the house, with ``common.models``: the labeling pipeline, the
sample cache, the data builders and the plugin all read and write rows here.
Readers yield one record at a time, so a MuSiQue split or a Wikipedia dump is
never held in memory: local ``.jsonl``/``.json`` (JSON Lines or one JSON
array), optionally ``.gz``, ``.parquet`` (read batch by batch), or a Hugging
Face dataset id (or a local dataset folder) read with ``streaming=True``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

LOG = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".jsonl", ".parquet")
LOCAL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _iter_json_file(
    path: Path, torn: list[str] | None = None
) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` of JSON Lines or one JSON array; ``where`` is path:line.

    With ``torn`` (a list), lines that are not JSON are listed there and
    skipped instead of raising (the sample cache's torn last line).
    """
    try:
        with _open_text(path) as handle:
            seen = False
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if not seen and line.lstrip().startswith("["):
                    break
                seen = True
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    if torn is not None:
                        torn.append(f"{path}:{lineno}")
                        continue
                    raise ValueError(
                        f"{path}:{lineno}: not valid JSON ({err.msg}): every line "
                        "must be one JSON object (JSON Lines)"
                    ) from None
                yield f"{path}:{lineno}", record
            else:
                return
    except (gzip.BadGzipFile, UnicodeDecodeError, EOFError) as err:
        raise ValueError(
            f"{path}: cannot be read as UTF-8 JSON ({err}): use .jsonl, .json, "
            ".jsonl.gz or .parquet"
        ) from None
    # One JSON array: the standard library cannot stream it; such files are
    # small in practice (samples, HippoRAG-style copies).
    LOG.warning("%s is one JSON array, not JSON Lines: reading it whole", path)
    with _open_text(path) as handle:
        try:
            records = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected JSON Lines or a JSON array")
    for index, record in enumerate(records):
        yield f"{path}[{index}]", record


def _iter_parquet(path: Path, batch_size: int = 256) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pfile:
            index = 0
            for batch in pfile.iter_batches(batch_size=batch_size):
                for record in batch.to_pylist():
                    yield f"{path} row {index}", record
                    index += 1
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: not a readable parquet file ({err})") from None


def numbered_records(
    path: str | Path, torn: list[str] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The one reader of local row files: ``(where, row)`` per JSON object.

    JSON Lines, one JSON array (both optionally ``.gz``) or parquet. ``where``
    names the file and line (``rows.jsonl:7``) for error messages. A missing
    file, a folder, bad JSON or a row that is not an object is a ValueError or
    FileNotFoundError that names the file and line. With ``torn`` (a list),
    bad lines and non-objects are listed there and skipped instead.
    """
    for where, record in _any_records(Path(path), torn):
        if not isinstance(record, dict) and torn is not None:
            torn.append(where)
            continue
        if not isinstance(record, dict):
            raise ValueError(
                f"{where}: expected a JSON object per row, got "
                f"{type(record).__name__} {_short(record)}"
            )
        yield where, record


def _any_records(
    file: Path, torn: list[str] | None = None
) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` of an existing file, objects or not (data builders
    count non-objects as a skip reason; row files refuse them)."""
    if file.is_dir():
        raise FileNotFoundError(f"{file} is a folder: give a .jsonl, .json or .parquet")
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    if file.name.endswith(".parquet"):
        return _iter_parquet(file)
    return _iter_json_file(file, torn)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_local(source: str) -> bool:
    return os.path.exists(source) or source.endswith(LOCAL_SUFFIXES)


def iter_records(
    source: str, split: str = "train", config: str | None = None
) -> Iterator[dict[str, Any]]:
    """Records of a local file (see module docstring), or of an HF dataset id or
    dataset folder read by ``datasets`` with ``streaming=True``."""
    path = Path(source)
    if is_local(source) and not path.is_dir():
        for _, record in _any_records(path):
            yield record
        return
    # An HF id, or a local folder in a layout `datasets` understands (a clone
    # of a hub dataset, a folder of jsonl/parquet shards): stream it.
    from datasets import load_dataset

    LOG.info("streaming %s (config %s, split %s)", source, config, split)
    stream = load_dataset(source, name=config, split=split, streaming=True)
    for record in stream:
        yield dict(record)


def check_output_path(out: str | Path) -> Path:
    path = Path(out)
    if path.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(
            f"--out {out}: use a name ending in {' or '.join(OUTPUT_SUFFIXES)}"
        )
    return path


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """The one JSON Lines writer: a temporary file, then a rename.

    A killed run never leaves half a file; a reader sees the old file or the
    new one.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def write_rows(rows: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """Write JSONL or parquet (by suffix), atomically (temp file, then rename)."""
    path = check_output_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".partial")
    pq.write_table(pa.Table.from_pylist([dict(r) for r in rows]), tmp)
    os.replace(tmp, path)
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a local file (``numbered_records``): ``sealong label --data``,
    the labeled files, tests."""
    return [record for _, record in numbered_records(path)]
