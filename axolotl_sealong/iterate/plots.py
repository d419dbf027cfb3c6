"""The report's PNGs: MBR score histograms per round, scores before/after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from axolotl_sealong.iterate.records import ScoreDistribution


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise FileNotFoundError(
            "the report of sealong demo and sealong iterate draws PNG plots "
            "with matplotlib: pip install matplotlib (or pip install "
            "'axolotl-sealong[demo]')"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_plotting() -> None:
    """Fail before any compute when the report could not be drawn."""
    _pyplot()


def plot_scores(by_round: Mapping[int, ScoreDistribution], path: Path) -> Path:
    """Histograms of MBR scores: chosen vs rejected vs all samples, per round."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(by_round), figsize=(5 * len(by_round), 3.6), squeeze=False
    )
    for ax, (r, dist) in zip(axes[0], by_round.items(), strict=True):
        values = dist.all or [0.0, 1.0]
        lo, hi = min(values), max(values)
        # one set of bin edges for the three histograms, so bars line up
        bins = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 20
        ax.hist(dist.all, bins=bins, alpha=0.35, label="all samples", color="grey")
        ax.hist(dist.chosen, bins=bins, alpha=0.7, label="chosen", color="tab:green")
        ax.hist(dist.rejected, bins=bins, alpha=0.7, label="rejected", color="tab:red")
        ax.set_title(f"round {r}: MBR scores")
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
