"""The report of ``sealong demo``: bootstrap intervals, plots, Markdown.

Plain functions over the numbers the demo collects, so they can be tested
without running a model. Confidence intervals are percentile bootstraps over
the evaluation questions; the gain's interval is *paired* (the same resampled
questions before and after), which is the right test for one model evaluated
twice on one set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
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


def gain_summary(
    before: Sequence[float], after: Sequence[float], seed: int = 0
) -> dict[str, Any]:
    """after - before (0-100) with its paired 95 % interval and the verdict."""
    lo, hi = paired_bootstrap_ci(before, after, seed=seed)
    gain = 100 * (mean(after) - mean(before))
    return {
        "gain": round(gain, 2),
        "gain_ci95": [round(100 * lo, 2), round(100 * hi, 2)],
        # "larger than its confidence interval": the interval excludes zero
        "significant": lo > 0 or hi < 0,
    }


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise FileNotFoundError(
            "the demo report draws PNG plots with matplotlib: pip install matplotlib "
            "(or pip install 'axolotl-sealong[demo]')"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_plotting() -> None:
    """Fail before any compute when the report could not be drawn."""
    _pyplot()


def plot_scores(rounds: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Histograms of MBR scores: chosen vs rejected vs all samples, per round."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(rounds), figsize=(5 * len(rounds), 3.6), squeeze=False
    )
    for ax, rnd in zip(axes[0], rounds, strict=True):
        dist = rnd["score_distribution"]
        values = dist["all"] or [0.0, 1.0]
        lo, hi = min(values), max(values)
        # one set of bin edges for the three histograms, so bars line up
        bins = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 20
        ax.hist(dist["all"], bins=bins, alpha=0.35, label="all samples", color="grey")
        ax.hist(dist["chosen"], bins=bins, alpha=0.7, label="chosen", color="tab:green")
        ax.hist(
            dist["rejected"], bins=bins, alpha=0.7, label="rejected", color="tab:red"
        )
        ax.set_title(f"round {rnd['round']}: MBR scores")
        ax.set_xlabel("mean cosine similarity to the other samples")
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_before_after(
    evals: Sequence[Mapping[str, Any]], path: Path, title: str = "sealong_synth"
) -> Path:
    """Held-out SubEM per round (0 = before training) with 95 % bootstrap bars."""
    plt = _pyplot()
    labels = [e["label"] for e in evals]
    values = [e["subem"] for e in evals]
    errs = [
        [v - e["ci95"][0] for v, e in zip(values, evals, strict=True)],
        [e["ci95"][1] - v for v, e in zip(values, evals, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(evals), 3.6))
    colors = ["tab:grey"] + ["tab:blue"] * (len(evals) - 1)
    ax.bar(labels, values, yerr=errs, capsize=6, color=colors)
    for i, v in enumerate(values):
        # inside the bar: above it the label would sit on the error bar
        ax.text(i, v / 2, f"{v:.1f}", ha="center", va="center", color="white")
    ax.set_ylabel("SubEM (0-100)")
    ax.set_title(f"{title}, n = {evals[0]['n']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- #
# Markdown
# --------------------------------------------------------------------------- #
def _fmt_ci(ci: Sequence[float]) -> str:
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def _dtypes(report: Mapping[str, Any]) -> str:
    d = report.get("dtype")  # reports before 2026-11-24 ran everything in float32
    if not d:
        return ", float32"
    return (
        f", sampled in {d['sampling']}, evaluated and trained in {d['eval_and_train']}"
    )


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the same numbers as ``report.json``, for people."""
    s = report["settings"]
    lines = [
        "# SEALONG demo report",
        "",
        f"Made by `{report['command']}` on {report['machine']}, {report['finished']}.",
        "",
        f"Model: {report['model']}{_dtypes(report)}. "
        f"Training data: {s['num_train']} synthetic "
        f"questions ({s['min_tokens']}-{s['max_tokens']} tokens, hops {s['hops']}, "
        f"{s['distractors']} decoy chain(s)); evaluation: {report['n_eval']} "
        + (
            "questions from the held-out eval split (disjoint entity names, seed "
            f"{s.get('eval_seed', s.get('seed'))}), never used for any choice of "
            "settings."
            if s.get("eval_split", "eval") == "eval"
            else "questions from the dev split (training-split names, other "
            "questions): a run for choosing settings, not a held-out result."
        ),
        "",
        "## SubEM (lm-eval `sealong_synth`, greedy)",
        "",
        "| model | SubEM | 95 % CI | gain vs before | gain 95 % CI (paired) | "
        "output tokens |",
        "|---|---|---|---|---|---|",
    ]
    for e in report["evals"]:
        gain = "" if e.get("gain") is None else f"{e['gain']:+.1f}"
        gci = "" if e.get("gain_ci95") is None else _fmt_ci(e["gain_ci95"])
        ci = f"{e['ci95'][0]:.1f}-{e['ci95'][1]:.1f}"
        lines.append(
            f"| {e['label']} | {e['subem']:.1f} | {ci} "
            f"| {gain} | {gci} | {e['output_tokens']:.1f} |"
        )
    verdict = (
        "the gain is larger than its 95 % confidence interval (the interval "
        "excludes zero)"
        if report["significant"]
        else "the gain is NOT distinguishable from zero at 95 % (the interval "
        "includes zero)"
    )
    lines += [
        "",
        f"After {len(report['rounds'])} round(s): {report['before']:.1f} -> "
        f"{report['after']:.1f} SubEM, gain {report['gain']:+.1f}, 95 % CI "
        f"{_fmt_ci(report['gain_ci95'])}: {verdict}.",
        "",
        "![before/after](before_after.png)",
        "",
        "## Self-labeling (training questions; gold answers used only here)",
        "",
        "| round | sampled by | MBR pick | random sample | mean over samples | "
        "oracle | pairs | chosen tokens | rejected tokens |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        d = r["diagnostics"]
        lines.append(
            f"| {r['round']} | {r['sampled_by']} | {d.get('mbr_pick', 0):.1f} | "
            f"{d.get('random_sample', 0):.1f} | {d.get('sample_mean', 0):.1f} | "
            f"{d.get('oracle', 0):.1f} | {r['pairs']} | "
            f"{r['lengths']['chosen']:.1f} | {r['lengths']['rejected']:.1f} |"
        )
    lines += [
        "",
        "MBR pick by N (the first n samples of each question, same embedder; the "
        "mean over samples is what a random pick gets on average):",
        "",
        "| round | n | MBR pick | mean over samples | oracle |",
        "|---|---|---|---|---|",
        *[
            f"| {r['round']} | {p['n']} | {p['mbr_pick']:.1f} | "
            f"{p['sample_mean']:.1f} | {p['oracle']:.1f} |"
            for r in report["rounds"]
            for p in r.get("pick_by_n", [])
        ],
        "",
        "MBR pick vs random sample is the method's premise (the paper's Table 7): "
        "when the consensus output is not more often right than a random one, "
        "training on it cannot teach the model the right answers.",
        "",
        "![MBR scores](mbr_scores.png)",
        "",
        "## Wall clock (seconds)",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    for name, sec in report["seconds"].items():
        lines.append(f"| {name} | {sec:.0f} |")
    lines += [
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(report["settings"], indent=2),
        "```",
        "",
        "Reproduce an evaluation with the command in `report.json` "
        "(`evals[].command`).",
        "",
    ]
    return "\n".join(lines)
