"""Streaming readers, atomic JSONL/parquet writers and the dataset card.

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
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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


def card_path(out: str | Path) -> Path:
    """``train.jsonl`` -> ``train.card.md`` next to it."""
    path = Path(out)
    return path.with_name(path.stem + ".card.md")


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


@dataclass
class BuildReport:
    """What a builder did: rows kept, rows skipped by reason, settings."""

    kind: str
    settings: dict[str, Any]
    requested: int
    considered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    short: int = 0  # rows kept below tolerance because distractors ran out
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def skip_summary(self) -> str:
        if not self.skipped:
            return "none"
        return ", ".join(f"{n} {r}" for r, n in self.skipped.most_common())


def histogram(values: Sequence[int], bins: int = 10, width: int = 40) -> str:
    """A plain-text histogram (one line per bin) for the dataset card."""
    if not values:
        return "(no rows)"
    lo, hi = min(values), max(values)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = Counter((v - lo) // step for v in values)
    top = max(counts.values())
    lines = []
    for b in range(-(-(hi - lo + 1) // step)):
        start = lo + b * step
        n = counts.get(b, 0)
        bar = "#" * max(1 if n else 0, round(width * n / top))
        lines.append(f"{start:>7}-{start + step - 1:<7} {n:>6} {bar}")
    return "\n".join(lines)


def render_card(
    report: BuildReport, rows: Sequence[Mapping[str, Any]], out: Path, command: str
) -> str:
    lengths = [int(r["num_tokens"]) for r in rows]
    stats = "no rows"
    if lengths:
        stats = (
            f"min {min(lengths)}, median {int(statistics.median(lengths))}, "
            f"mean {statistics.mean(lengths):.0f}, max {max(lengths)}"
        )
    settings = "\n".join(f"- `{k}`: `{v}`" for k, v in report.settings.items())
    skipped = "\n".join(f"- {r}: {n}" for r, n in report.skipped.most_common())
    notes = "\n".join(f"- {n}" for n in report.notes)
    return f"""# {out.name}

Built by `axolotl-sealong` (`sealong data {report.kind}`); see
`axolotl_sealong/data/README.md` for how contexts are built.

Command:

```
{command}
```

## Settings

{settings}

## Counts

- rows written: {len(rows)} (requested {report.requested})
- source items considered: {report.considered}
- rows kept below the length tolerance (distractors ran out): {report.short}
- skipped: {sum(report.skipped.values())}
{skipped or "- (nothing skipped)"}

## Context length (tokens of the tokenizer above)

{stats}

```
{histogram(lengths)}
```

## Fields

`id`, `context`, `question`, `answers` (gold answers: diagnostics and
evaluation only, never training targets), `num_tokens` (the context string's
token count), `target_tokens`, plus builder metadata.
{chr(10) + "## Notes" + chr(10) + chr(10) + notes + chr(10) if notes else ""}"""


def write_dataset(
    rows: Sequence[Mapping[str, Any]],
    out: str | Path,
    report: BuildReport,
    command: str,
) -> tuple[Path, Path]:
    """Rows plus the card next to them; returns both paths."""
    path = write_rows(rows, out)
    card = card_path(path)
    card.write_text(render_card(report, rows, path, command), encoding="utf-8")
    return path, card


def check_lengths(num: int, min_tokens: int, max_tokens: int) -> None:
    if num <= 0:
        raise ValueError(f"--num must be positive, got {num}")
    if min_tokens <= 0 or max_tokens < min_tokens:
        raise ValueError(
            f"need 0 < --min-tokens <= --max-tokens, got {min_tokens} and {max_tokens}"
        )


def finish_report(report: BuildReport, rows: list[dict[str, Any]], what: str) -> None:
    """Log the outcome; a clear error when nothing usable is left."""
    if not rows:
        raise ValueError(
            f"no usable {what}: read {report.considered} items, built 0 rows; "
            f"skipped: {report.skip_summary()}"
        )
    if len(rows) < report.requested:
        note = (
            f"only {len(rows)} of {report.requested} requested rows could be built "
            "(see the skip counts)"
        )
        report.notes.append(note)
        LOG.warning(note)
    if report.short:
        note = (
            f"{report.short} rows end more than the tolerance below their target: "
            "the distractor supply ran out (raise the pool size or lower the range)"
        )
        report.notes.append(note)
        LOG.warning(note)
    LOG.info("built %d rows; skipped: %s", len(rows), report.skip_summary())
