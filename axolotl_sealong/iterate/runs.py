"""What a labeling run left in its folder, read for the next decision.

The plugin writes one labels folder per ``axolotl preprocess`` under
``round{r}/prepared/sealong/<hash>/`` (the pipeline's file names:
:data:`~axolotl_sealong.core.pipeline.SCORED_FILE`, ``DIAGNOSTICS_FILE``, the
training rows). From it: the round's label record (gold diagnostics, label-free
signals, score distributions, lengths), the margin filter's threshold, the MBR
gap behind every training row, and the bounded union's pick of older rows.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from axolotl_sealong.common.rows import read_rows
from axolotl_sealong.core.pipeline import DIAGNOSTICS_FILE, SCORED_FILE
from axolotl_sealong.iterate.records import LabelRecord, ScoreDistribution, Signals
from axolotl_sealong.iterate.stats import mean

LOG = logging.getLogger(__name__)


def labeled_dirs(round_dir: Path) -> list[Path]:
    found = glob.glob(str(round_dir / "prepared" / "sealong" / "*" / DIAGNOSTICS_FILE))
    return sorted((Path(p).parent for p in found), key=lambda p: p.stat().st_mtime)


def labeled_dir(round_dir: Path, before: Sequence[Path] = ()) -> Path:
    """The labels folder this round's last axolotl call made (or reused)."""
    found = [p for p in labeled_dirs(round_dir) if p not in before] or labeled_dirs(
        round_dir
    )[-1:]
    if not found:
        raise RuntimeError(
            f"no labeled folder under {round_dir / 'prepared' / 'sealong'}"
        )
    return found[-1]


def signals(folder: Path) -> Signals:
    """The label-free signals of a labels folder (or a guard probe's)."""
    from axolotl_sealong.core.diagnostics import label_free_signals

    return Signals(**label_free_signals(read_rows(folder / SCORED_FILE)))


def label_record(
    folder: Path,
    scored: list[dict[str, Any]],
    tokenizer: Any,
    *,
    command: str,
    temperature: float,
    margin: float | None,
) -> LabelRecord:
    """Diagnostics, signals, pair count, score distributions and lengths
    (``scored``: the rows of the folder's scored file)."""
    from axolotl_sealong.core.diagnostics import (
        label_free_signals,
        live_scores,
        pairs_by_gap,
    )

    diag = json.loads((folder / DIAGNOSTICS_FILE).read_text())
    chosen: list[float] = []
    rejected: list[float] = []
    every: list[float] = []
    len_chosen: list[int] = []
    len_rejected: list[int] = []
    len_all: list[int] = []
    for row in scored:
        scores, samples = row.get("scores") or [], row["samples"]
        lengths = [
            len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in samples
        ]
        every += live_scores(row)
        len_all += lengths
        if row.get("rejected") is not None:
            chosen.append(scores[row["chosen"]])
            rejected.append(scores[row["rejected"]])
            len_chosen.append(lengths[row["chosen"]])
            len_rejected.append(lengths[row["rejected"]])
    return LabelRecord(
        command=command,
        temperature=temperature,
        margin=margin,
        folder=str(folder),
        diagnostics=diag["subem"],
        signals=Signals(**label_free_signals(scored)),
        pairs_by_gap=pairs_by_gap(scored),
        pick_by_n=pick_by_n(scored, diag["settings"]),
        counts=diag["counts"],
        pairs=len(chosen),
        score_distribution=ScoreDistribution(
            all=every, chosen=chosen, rejected=rejected
        ),
        mean_margin=round(
            mean([c - r for c, r in zip(chosen, rejected, strict=True)]), 4
        ),
        lengths={
            "all": round(mean(len_all), 1),
            "chosen": round(mean(len_chosen), 1),
            "rejected": round(mean(len_rejected), 1),
        },
        label_seconds=diag.get("seconds", {}),
    )


def log_signals(r: int, rec: LabelRecord) -> None:
    """One line per round: the label-free signals, then the gold diagnostics."""
    sig, gold = rec.signals, rec.diagnostics
    LOG.info(
        "round %d labels: identical share %s, mean similarity %s, distinct samples "
        "%s, pairs %s, gap p50 %s%s",
        r,
        sig.identical_share,
        sig.mean_similarity,
        sig.distinct_samples,
        sig.pairs,
        sig.gap.get("p50"),
        (
            f"; gold: MBR pick {gold['mbr_pick']} vs random sample "
            f"{gold['random_sample']}, chosen/rejected right {gold['chosen']}/"
            f"{gold['rejected']}"
            if gold.get("questions_with_answers")
            else ""
        ),
    )


def pick_by_n(scored: list[dict[str, Any]], settings: dict[str, Any]) -> list[Any]:
    """MBR pick accuracy for N = 4, 8, ... up to the N sampled (same embedder)."""
    import numpy as np

    from axolotl_sealong.common.models import resolve_model
    from axolotl_sealong.core.diagnostics import pick_accuracy_by_n
    from axolotl_sealong.core.mbr import cosine_matrix
    from axolotl_sealong.embedding.embedder import Embedder

    if not scored or settings.get("utility", "embedding") != "embedding":
        return []
    if not any(row.get("answers") for row in scored):
        return []
    embedder = Embedder(
        resolve_model(settings["embedder"]),
        long_text=settings["embedder_long_text"],
        trust_remote_code=bool(settings.get("embedder_trust_remote_code")),
    )
    texts = [t for row in scored for t in row["samples"]]
    emb = np.asarray(embedder.encode(texts, show_progress=False))
    sims, start = [], 0
    for row in scored:
        n = len(row["samples"])
        sims.append(cosine_matrix(emb[start : start + n]))
        start += n
    big = max(len(r["samples"]) for r in scored)
    # n = 2 is left out: two samples always tie, so "the pick" is the first one
    ns = [n for n in (4, 8, 16, 32, 64) if n < big] + [big]
    return pick_accuracy_by_n(scored, sims, ns)


def margin_threshold(scored: Sequence[dict[str, Any]], quantile: float) -> float:
    """The ``quantile`` of the best-worst MBR gaps over the round's pairs
    (``scored``: the rows of its labels folder's scored file)."""
    import numpy as np

    gaps = [float(r["gap"]) for r in scored if r.get("rejected") is not None]
    if not gaps:
        return 0.0
    return round(float(np.quantile(gaps, quantile)), 6)


def row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def row_gaps(folder: Path, mode: str) -> dict[str, float]:
    """The best-worst MBR gap behind every training row a labels folder made.

    Rows carry only their messages; the scored file has the gaps, and
    ``row_sources`` says which scored row each written row came from.
    """
    from axolotl_sealong.core.pipeline import row_sources
    from axolotl_sealong.integrations.axolotl.plugin import ROW_FILE

    scored = read_rows(folder / SCORED_FILE)
    rows = read_rows(folder / ROW_FILE[mode])
    sft, prefs = row_sources(scored)
    src = sft if mode == "sft" else prefs
    if len(src) != len(rows):
        raise RuntimeError(
            f"{folder}: {len(rows)} rows in {ROW_FILE[mode]} but {len(src)} in "
            f"{SCORED_FILE}; the folder is incomplete: relabel that round"
        )
    return {
        row_key(row): float(scored[i]["gap"]) for row, i in zip(rows, src, strict=True)
    }


def own_rows(folder: Path, mode: str, margin: float | None) -> int:
    """Rows this round's labels give for training (pairs at or above ``margin``)."""
    from axolotl_sealong.core.pipeline import row_sources

    scored = read_rows(folder / SCORED_FILE)
    sft, prefs = row_sources(scored)
    if mode == "sft":
        return len(sft)
    floor = float("-inf") if margin is None else margin
    return sum(1 for i in prefs if scored[i]["gap"] >= floor)


def pick_union(
    older: Sequence[tuple[int, list[dict[str, Any]], dict[str, float]]],
    budget: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The older rounds' rows with the largest MBR gaps, at most ``budget``.

    ``older``: (round, its training rows, their gaps by :func:`row_gaps`). The
    small-gap half of every round's pairs carried no preference signal on the
    dev split (docs/results/iterate_dev_runs.md), so those are the rows to leave out
    when the union must stay small. Ties go to the earlier round and row; the
    kept rows stay in file order. Returns the rows and the
    :class:`~axolotl_sealong.iterate.records.UnionRecord` fields that count them.
    """
    ranked = []
    unmatched = 0
    for k, rows, gaps in older:
        for i, row in enumerate(rows):
            gap = gaps.get(row_key(row))
            unmatched += gap is None
            ranked.append((-(float("-inf") if gap is None else gap), k, i, row))
    ranked.sort(key=lambda t: t[:3])
    keep = sorted(ranked[: max(budget, 0)], key=lambda t: t[1:3])
    by_round = {str(k): sum(1 for t in keep if t[1] == k) for k, _, _ in older}
    kept_gaps = [-t[0] for t in keep if t[0] != float("inf")]
    return [t[3] for t in keep], {
        "rows": len(keep),
        "older_rows": len(ranked),
        "by_round": by_round,
        "min_gap": round(min(kept_gaps), 6) if kept_gaps else None,
        "unmatched": unmatched,
    }
