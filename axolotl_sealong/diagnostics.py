"""The paper's Table 7 view of a labeling run: is the MBR pick better than chance?

With gold answers (kept for diagnostics, never for training) we compare SubEM
of the MBR pick with a random sample, the mean over samples, and the oracle
(any sample correct), plus chosen vs rejected for the pairs that were made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from axolotl_sealong.metrics import sub_em

ROWS = ("mbr_pick", "random_sample", "sample_mean", "oracle", "chosen", "rejected")


def subem_diagnostics(scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """SubEM (0-100) of each pick over the questions that have gold answers."""
    with_gold = [r for r in scored if r.get("answers")]
    if not with_gold:
        return {"questions_with_answers": 0}
    sums = dict.fromkeys(ROWS, 0.0)
    pairs = 0
    for r in with_gold:
        hits = [sub_em(s, r["answers"]) for s in r["samples"]]
        sums["mbr_pick"] += hits[r["chosen"]]
        sums["random_sample"] += hits[r["random_pick"]]
        sums["sample_mean"] += sum(hits) / len(hits)
        sums["oracle"] += max(hits)
        if r.get("rejected") is not None:
            pairs += 1
            sums["chosen"] += hits[r["chosen"]]
            sums["rejected"] += hits[r["rejected"]]
    n = len(with_gold)
    out: dict[str, Any] = {"questions_with_answers": n, "pairs_with_answers": pairs}
    for name in ROWS[:4]:
        out[name] = round(100 * sums[name] / n, 2)
    for name in ROWS[4:]:
        out[name] = round(100 * sums[name] / pairs, 2) if pairs else None
    return out


def format_table(diag: dict[str, Any]) -> str:
    """A plain-text table of ``subem_diagnostics`` for the terminal."""
    n = diag.get("questions_with_answers", 0)
    if not n:
        return "SubEM diagnostics: no gold answers in the data"
    lines = [f"SubEM (0-100) over {n} question(s) with gold answers", ""]
    labels = {
        "mbr_pick": "MBR pick (chosen)",
        "random_sample": "random sample",
        "sample_mean": "mean over samples",
        "oracle": "oracle (any sample)",
        "chosen": f"chosen, {diag.get('pairs_with_answers', 0)} pairs",
        "rejected": "rejected, same pairs",
    }
    for key, label in labels.items():
        value = diag.get(key)
        lines.append(f"  {label:<24} {'-' if value is None else f'{value:6.2f}'}")
    return "\n".join(lines)
