"""``report.md``: the numbers of ``report.json`` as tables, for people.

Rendered from ``report.json``'s mapping (:mod:`~axolotl_sealong.iterate.report`
builds it from the typed stage records), so a report can be drawn again from
its JSON. The sections: scores per task and round with paired gains, the
label-free signals and the policies' decisions, the gold-answer diagnostics of
the labels, seconds per stage, the settings. ``sealong demo`` puts its own
header on top (:mod:`axolotl_sealong.demo.report`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from axolotl_sealong.iterate.stats import excludes_zero


def fmt_ci(ci: Sequence[float]) -> str:
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def made_by(report: Mapping[str, Any]) -> str:
    return (
        f"Made by `{report['command']}` on {report['machine']}, {report['finished']}."
    )


def iterate_header(report: Mapping[str, Any]) -> list[str]:
    tasks = ", ".join(report.get("tasks", {})) or "none"
    return [
        "# SEALONG iterate report",
        "",
        made_by(report),
        "",
        f"Recipe: `{report.get('recipe_path')}`, base model "
        f"`{report.get('base_model')}`. Evaluation: lm-eval {tasks}.",
        "",
    ]


def _gain_cells(row: Mapping[str, Any] | None) -> str:
    if not row or row.get("gain") is None:
        return " | "
    return f"{row['gain']:+.1f} | {fmt_ci(row['gain_ci95'])}"


def _verdict(row: Mapping[str, Any]) -> str:
    if excludes_zero(row["gain_ci95"]):
        return "the interval excludes zero"
    return "NOT distinguishable from zero at 95 % (the interval includes zero)"


def _eval_section(report: Mapping[str, Any]) -> list[str]:
    """SubEM per round and task, with paired gains vs before and vs the last round."""
    lines: list[str] = []
    for task, rows in (report.get("tasks") or {}).items():
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
                f"{fmt_ci(last['gain_ci95'])}: {_verdict(last)}."
            )
        for i, e in enumerate(rows[2:], start=2):
            p = e["gain_vs_previous"]
            lines.append(
                f"Round {i} vs round {i - 1}: {p['gain']:+.1f}, 95 % CI "
                f"{fmt_ci(p['gain_ci95'])}: {_verdict(p)}."
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


def render_markdown(
    report: Mapping[str, Any],
    header: Callable[[Mapping[str, Any]], list[str]] = iterate_header,
) -> str:
    """``report.md``: the same numbers as ``report.json``, for people.

    ``header``: the title and what was run (``sealong demo`` has its own).
    """
    rounds = report["rounds"]
    lines = header(report) + _eval_section(report)
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
