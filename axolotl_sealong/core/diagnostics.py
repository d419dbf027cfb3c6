"""The paper's Table 7 view of a labeling run: is the MBR pick better than chance?

With gold answers (kept for diagnostics, never for training) we compare SubEM
of the MBR pick with a random sample, the mean over samples, and the oracle
(any sample correct), plus chosen vs rejected for the pairs that were made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from axolotl_sealong.core.metrics import sub_em

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
        # no pick (every sample blank but one) counts as a miss
        sums["mbr_pick"] += hits[r["chosen"]] if r["chosen"] is not None else 0.0
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


def pick_accuracy_by_n(
    scored: Sequence[dict[str, Any]],
    similarities: Sequence[Any],
    ns: Sequence[int],
) -> list[dict[str, Any]]:
    """SubEM (0-100) of the MBR pick had only the first ``n`` samples been drawn.

    Answers "would a larger N help?" from one labeling run: the MBR pick among
    the first n samples (scores from the n x n corner of each question's
    similarity matrix) against the expected accuracy of a random sample and
    the oracle. ``similarities[i]`` is question i's N x N matrix.
    """
    import numpy as np

    from axolotl_sealong.core.mbr import scores_from_similarity

    out = []
    for n in ns:
        pick = mean = oracle = 0.0
        count = 0
        for row, sim in zip(scored, similarities, strict=True):
            if not row.get("answers") or len(row["samples"]) < n or n < 2:
                continue
            hits = [sub_em(s, row["answers"]) for s in row["samples"][:n]]
            best = int(np.argmax(scores_from_similarity(np.asarray(sim)[:n, :n])))
            pick += hits[best]
            mean += sum(hits) / n
            oracle += max(hits)
            count += 1
        if count:
            out.append(
                {
                    "n": n,
                    "questions": count,
                    "mbr_pick": round(100 * pick / count, 2),
                    "sample_mean": round(100 * mean / count, 2),
                    "oracle": round(100 * oracle / count, 2),
                }
            )
    return out


GAP_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def live_scores(row: dict[str, Any]) -> list[float]:
    """A scored row's MBR scores without its blank samples' (recorded as None)."""
    return [v for v in row.get("scores") or [] if v is not None]


def label_free_signals(scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How much a labeling run's samples agree, from the samples alone.

    No gold answers: these can steer a run (the iterate diversity guard, the
    margin filter). ``identical_share``: questions whose N samples are one text
    (no pair can be made). ``mean_similarity``: the mean MBR score, which is the
    mean pairwise utility of the samples. ``distinct_samples``: distinct texts
    per question. ``gap``: quantiles of the best-worst MBR score gap, over all
    questions and over those that gave a pair.
    """
    import numpy as np

    if not scored:
        return {"questions": 0}
    identical = [len({s.strip() for s in r["samples"]}) == 1 for r in scored]
    scores = [float(np.mean(kept)) for r in scored if (kept := live_scores(r))]
    gaps = [float(r.get("gap", 0.0)) for r in scored]
    paired = [float(r.get("gap", 0.0)) for r in scored if r.get("rejected") is not None]

    def quantiles(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        qs = np.quantile(values, GAP_QUANTILES)
        out = {
            f"p{round(100 * q)}": round(float(v), 4)
            for q, v in zip(GAP_QUANTILES, qs, strict=True)
        }
        out["mean"] = round(float(np.mean(values)), 4)
        return out

    return {
        "questions": len(scored),
        "identical_share": round(sum(identical) / len(scored), 4),
        "mean_similarity": round(float(np.mean(scores)), 4) if scores else None,
        "distinct_samples": round(
            float(np.mean([len({s.strip() for s in r["samples"]}) for r in scored])), 2
        ),
        "pairs": len(paired),
        "gap": quantiles(gaps),
        "gap_paired": quantiles(paired),
    }


def pairs_by_gap(
    scored: Sequence[dict[str, Any]], parts: int = 2
) -> list[dict[str, Any]]:
    """Chosen vs rejected SubEM of the pairs, by MBR gap (smallest gaps first).

    Gold answers, for choosing a margin filter on a dev run: if the pairs with a
    small best-worst gap have chosen no more often right than rejected, they
    teach noise and a margin filter can drop them.
    """
    pairs = sorted(
        (r for r in scored if r.get("answers") and r.get("rejected") is not None),
        key=lambda r: float(r["gap"]),
    )
    out = []
    for i in range(parts):
        part = pairs[i * len(pairs) // parts : (i + 1) * len(pairs) // parts]
        if not part:
            continue
        chosen = sum(sub_em(r["samples"][r["chosen"]], r["answers"]) for r in part)
        rejected = sum(sub_em(r["samples"][r["rejected"]], r["answers"]) for r in part)
        out.append(
            {
                "pairs": len(part),
                "gap_from": round(float(part[0]["gap"]), 4),
                "gap_to": round(float(part[-1]["gap"]), 4),
                "chosen": round(100 * chosen / len(part), 2),
                "rejected": round(100 * rejected / len(part), 2),
            }
        )
    return out
