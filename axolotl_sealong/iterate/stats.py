"""Bootstrap intervals for evaluation scores, on the 0-100 scale the paper reports.

Plain functions over per-question scores, so they can be tested without
running a model. Confidence intervals are percentile bootstraps over the
evaluation questions; the gain's interval is *paired* (the same resampled
questions before and after), which is the right test for one model evaluated
twice on one set.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

BOOTSTRAP_SAMPLES = 10_000


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _percentiles(stats: list[float], level: float) -> tuple[float, float]:
    stats.sort()
    lo = stats[int((1 - level) / 2 * (len(stats) - 1))]
    hi = stats[int((1 + level) / 2 * (len(stats) - 1))]
    return lo, hi


def bootstrap_ci(
    values: Sequence[float],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    if not values:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = random.Random(seed)
    n = len(values)
    stats = [mean([values[rng.randrange(n)] for _ in range(n)]) for _ in range(samples)]
    return _percentiles(stats, level)


def paired_bootstrap_ci(
    before: Sequence[float],
    after: Sequence[float],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval of mean(after) - mean(before), resampling questions in pairs."""
    if len(before) != len(after):
        raise ValueError(
            f"paired bootstrap needs one score per question in both runs, got "
            f"{len(before)} before and {len(after)} after"
        )
    return bootstrap_ci(
        [a - b for a, b in zip(after, before, strict=True)],
        samples=samples,
        level=level,
        seed=seed,
    )


def score_summary(scores: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Mean and 95 % interval, on the 0-100 scale the paper reports."""
    lo, hi = bootstrap_ci(scores, seed=seed)
    return {
        "subem": round(100 * mean(scores), 2),
        "ci95": [round(100 * lo, 2), round(100 * hi, 2)],
        "n": len(scores),
    }


def excludes_zero(ci: Sequence[float]) -> bool:
    """ "Larger than its confidence interval": the interval excludes zero."""
    return bool(ci[0] > 0 or ci[1] < 0)


def gain_summary(
    before: Sequence[float], after: Sequence[float], seed: int = 0
) -> dict[str, Any]:
    """after - before (0-100) with its paired 95 % interval and the verdict."""
    lo, hi = paired_bootstrap_ci(before, after, seed=seed)
    gain = 100 * (mean(after) - mean(before))
    return {
        "gain": round(gain, 2),
        "gain_ci95": [round(100 * lo, 2), round(100 * hi, 2)],
        "significant": excludes_zero((lo, hi)),
    }
