"""The dataset card and build report of ``sealong data``: counts, skips,
length histograms, written next to the rows (``train.jsonl`` ->
``train.card.md``). The rows themselves are read and written by
``axolotl_sealong.common.rows``.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axolotl_sealong.common.rows import write_rows

LOG = logging.getLogger(__name__)


def card_path(out: str | Path) -> Path:
    """``train.jsonl`` -> ``train.card.md`` next to it."""
    path = Path(out)
    return path.with_name(path.stem + ".card.md")


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
