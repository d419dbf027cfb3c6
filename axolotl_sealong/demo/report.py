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


def _header(report: Mapping[str, Any]) -> list[str]:
    s = report["settings"]
    if report.get("kind", "demo") != "demo":
        tasks = ", ".join(report.get("tasks", {})) or "none"
        return [
            "# SEALONG iterate report",
            "",
            f"Made by `{report['command']}` on {report['machine']}, "
            f"{report['finished']}.",
            "",
            f"Recipe: `{report.get('recipe_path')}`, base model "
            f"`{report.get('base_model')}`. Evaluation: lm-eval {tasks}.",
            "",
        ]
    held_out = s.get("eval_split", "eval") == "eval"
    return [
        "# SEALONG demo report",
        "",
        f"Made by `{report['command']}` on {report['machine']}, {report['finished']}.",
        "",
        f"Model: {report['model']}{_dtypes(report)}. "
        f"Training data: {s['num_train']} synthetic "
        f"questions ({s['min_tokens']}-{s['max_tokens']} tokens, hops {s['hops']}, "
        f"{s['distractors']} decoy chain(s))"
        + (" per round, fresh each round" if s.get("questions_per_round") else "")
        + f"; evaluation: {report['n_eval']} "
        + (
            "questions from the held-out eval split (disjoint entity names, seed "
            f"{s.get('eval_seed', s.get('seed'))}), never used for any choice of "
            "settings."
            if held_out
            else "questions from the dev split (training-split names, other "
            "questions): a run for choosing settings, not a held-out result."
        ),
        "",
    ]


def _gain_cells(row: Mapping[str, Any] | None) -> str:
    if not row or row.get("gain") is None:
        return " | "
    return f"{row['gain']:+.1f} | {_fmt_ci(row['gain_ci95'])}"


def _verdict(row: Mapping[str, Any]) -> str:
    if excludes_zero(row["gain_ci95"]):
        return "the interval excludes zero"
    return "NOT distinguishable from zero at 95 % (the interval includes zero)"


def _eval_section(report: Mapping[str, Any]) -> list[str]:
    """SubEM per round and task, with paired gains vs before and vs the last round."""
    lines: list[str] = []
    tasks = report.get("tasks") or (
        {report.get("task", "sealong_synth"): report["evals"]}
        if report.get("evals")
        else {}
    )
    for task, rows in tasks.items():
        lines += [
            f"## {task} (lm-eval, paired 95 % CIs over the same questions)",
            "",
            "| model | SubEM | 95 % CI | gain vs before | paired 95 % CI | "
            "vs previous round | paired 95 % CI | output tokens |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, e in enumerate(rows):
            prev = e.get("gain_vs_previous") if i > 1 else None
            lines.append(
                f"| {e['label']} | {e['subem']:.1f} | {e['ci95'][0]:.1f}-"
                f"{e['ci95'][1]:.1f} | {_gain_cells(e)} | {_gain_cells(prev)} | "
                f"{e['output_tokens']:.1f} |"
            )
        lines.append("")
        if len(rows) > 1:
            last = rows[-1]
            lines.append(
                f"After {len(rows) - 1} round(s): {rows[0]['subem']:.1f} -> "
                f"{last['subem']:.1f}, gain {last['gain']:+.1f}, 95 % CI "
                f"{_fmt_ci(last['gain_ci95'])}: {_verdict(last)}."
            )
        for i, e in enumerate(rows[2:], start=2):
            p = e["gain_vs_previous"]
            lines.append(
                f"Round {i} vs round {i - 1}: {p['gain']:+.1f}, 95 % CI "
                f"{_fmt_ci(p['gain_ci95'])}: {_verdict(p)}."
            )
        lines += _stopped_lines(report.get("stopped"))
        lines += ["", "![before/after](before_after.png)", ""]
    return lines


def _stopped_lines(stopped: Mapping[str, Any] | None) -> list[str]:
    if not stopped:
        return []
    r, prev = stopped["round"], stopped["result_round"]
    return [
        f"**Round {r}: stopped** before labeling ({stopped['stopped']}; "
        "`--stop-at-guard-cap`). No round-"
        f"{r} model was trained or evaluated: the result is round {prev}'s model.",
    ]


def _training_rows(pol: Mapping[str, Any]) -> str:
    own, older = pol.get("training_rows"), pol.get("union_rows")
    if own is None or not older:
        return _cell(own)
    return f"{own} + {older} older"


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _signals_section(
    rounds: Sequence[Mapping[str, Any]], stopped: Mapping[str, Any] | None = None
) -> list[str]:
    """What each round's samples said without gold answers, and what was decided."""
    lines = [
        "## Label-free signals and round policies",
        "",
        "No gold answers: how much the N samples agree, what the diversity guard "
        "decided, and the pairs trained on.",
        "",
        "| round | questions | T | identical share | mean similarity | distinct "
        "samples | gap p25 / p50 / p75 | pairs | margin filter | training rows |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        sig = r.get("signals") or {}
        pol = r.get("policy") or {}
        gap = sig.get("gap") or {}
        q = pol.get("questions") or {}
        where = (
            f"{q['first']}-{q['first'] + q['rows'] - 1} (fresh)"
            if q.get("fresh")
            else "the recipe's"
        )
        margin = pol.get("margin")
        lines.append(
            f"| {r['round']} | {where} | {pol.get('temperature', '')} | "
            f"{sig.get('identical_share', '')} | {sig.get('mean_similarity', '')} | "
            f"{sig.get('distinct_samples', '')} | {gap.get('p25', '')} / "
            f"{gap.get('p50', '')} / {gap.get('p75', '')} | {r.get('pairs', '')} | "
            f"{'' if margin is None else f'gap >= {margin}'} | "
            f"{_training_rows(pol)} |"
        )
    if stopped:
        lines.append(
            f"| {stopped['round']} | stopped before labeling: "
            f"{stopped['stopped']} |  |  |  |  |  |  |  |  |"
        )
    probes = [
        (r["round"], p)
        for r in [*rounds, *([stopped] if stopped else [])]
        for p in (r.get("policy") or {}).get("probes", [])
    ]
    if probes:
        lines += [
            "",
            "Diversity guard probes (the round's first questions, sampled before "
            "the round):",
            "",
            "| round | T | questions | identical share | mean similarity | trips |",
            "|---|---|---|---|---|---|",
            *[
                f"| {rnd} | {p['temperature']} | {p['questions']} | "
                f"{p['identical_share']} | {p['mean_similarity']} | "
                f"{'; '.join(p['trips']) or 'none'} |"
                for rnd, p in probes
            ],
        ]
    return [*lines, ""]


def _gold_section(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "## Self-labeling (training questions; gold answers used only here)",
        "",
        "| round | sampled by | MBR pick | random sample | mean over samples | "
        "oracle | chosen / rejected right | pairs | chosen tokens | rejected tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        d = r["diagnostics"]
        cr = (
            f"{d['chosen']:.1f} / {d['rejected']:.1f}"
            if d.get("chosen") is not None and d.get("rejected") is not None
            else ""
        )
        lines.append(
            f"| {r['round']} | {r['sampled_by']} | {d.get('mbr_pick', 0):.1f} | "
            f"{d.get('random_sample', 0):.1f} | {d.get('sample_mean', 0):.1f} | "
            f"{d.get('oracle', 0):.1f} | {cr} | {r['pairs']} | "
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
            for r in rounds
            for p in r.get("pick_by_n", [])
        ],
    ]
    by_gap = [(r["round"], p) for r in rounds for p in r.get("pairs_by_gap", [])]
    if by_gap:
        lines += [
            "",
            "Pairs by MBR gap (best-worst score; smaller half first): is the chosen "
            "side right more often than the rejected one?",
            "",
            "| round | gap range | pairs | chosen right | rejected right |",
            "|---|---|---|---|---|",
            *[
                f"| {rnd} | {p['gap_from']}-{p['gap_to']} | {p['pairs']} | "
                f"{p['chosen']:.1f} | {p['rejected']:.1f} |"
                for rnd, p in by_gap
            ],
        ]
    return [
        *lines,
        "",
        "MBR pick vs random sample is the method's premise (the paper's Table 7): "
        "when the consensus output is not more often right than a random one, "
        "training on it cannot teach the model the right answers.",
        "",
        "![MBR scores](mbr_scores.png)",
        "",
    ]


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the same numbers as ``report.json``, for people."""
    rounds = report["rounds"]
    lines = _header(report) + _eval_section(report)
    if rounds:
        lines += _signals_section(rounds, report.get("stopped"))
        lines += _gold_section(rounds)
    adopted = report.get("adopted_stages")
    lines += [
        "## Wall clock (seconds)",
        "",
        *(
            [
                f"Stages taken from an earlier run (`--from-run`, not timed here): "
                f"{', '.join(adopted)}.",
                "",
            ]
            if adopted
            else []
        ),
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {sec:.0f} |" for name, sec in report["seconds"].items()],
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
