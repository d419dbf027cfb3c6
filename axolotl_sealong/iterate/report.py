"""``report.json``, ``report.md`` and the PNGs of a run, from its typed records.

Per lm-eval task: the score of every round with its bootstrap interval, the
paired gain against the model before and against the previous round; per
round: what the labels said and what the policies decided; the seconds per
stage and the settings. ``sealong demo`` writes the same report with its own
header and extra keys (model, dtypes).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from axolotl_sealong.iterate import markdown, plots, stats
from axolotl_sealong.iterate.records import EvalRecord, RoundResult, StoppedRound
from axolotl_sealong.iterate.state import Stages

LOG = logging.getLogger(__name__)


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU core(s), {gpu}, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def eval_rows(
    evals: Sequence[EvalRecord], seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Per task: SubEM (or the metric) per round, gains vs before and vs previous."""
    per_task: dict[str, list[dict[str, Any]]] = {}
    for task in evals[0].tasks if evals else {}:
        rows: list[dict[str, Any]] = []
        first = evals[0].tasks[task]
        for i, e in enumerate(evals):
            cur = e.tasks[task]
            if cur.doc_ids != first.doc_ids:
                raise RuntimeError(
                    f"the evaluations of {task} scored different questions; rerun "
                    "with --fresh"
                )
            row = {
                "label": "before" if i == 0 else f"round {i}",
                **stats.score_summary(cur.scores, seed=seed),
                "output_tokens": round(stats.mean(cur.output_tokens), 1),
                "command": e.command,
                "samples_file": cur.samples_file,
            }
            if i:
                vs_first = stats.gain_summary(first.scores, cur.scores, seed=seed)
                row.update(vs_first)
                # round 1's previous is the model before: the same bootstrap
                row["gain_vs_previous"] = (
                    dict(vs_first)
                    if i == 1
                    else stats.gain_summary(
                        evals[i - 1].tasks[task].scores, cur.scores, seed=seed
                    )
                )
            rows.append(row)
        per_task[task] = rows
    return per_task


def build_report(
    out: Path,
    *,
    kind: str,
    evals: Sequence[EvalRecord],
    rounds: Sequence[RoundResult | StoppedRound],
    stages: Stages,
    command: str,
    extra: Mapping[str, Any] | None = None,
    title: str = "held-out",
    seed: int = 0,
    header: Callable[[Mapping[str, Any]], list[str]] = markdown.iterate_header,
) -> dict[str, Any]:
    """``report.json`` / ``report.md`` / PNGs of a run (demo or iterate)."""
    per_task = eval_rows(evals, seed)
    stopped = next((r for r in rounds if isinstance(r, StoppedRound)), None)
    done = [r for r in rounds if isinstance(r, RoundResult)]
    seconds = stages.seconds()
    seconds["total"] = round(sum(seconds.values()), 1)
    report: dict[str, Any] = {"kind": kind}
    if per_task:
        task, rows = next(iter(per_task.items()))
        final = rows[-1]
        report |= {
            "task": task,
            "before": rows[0]["subem"],
            "after": final["subem"],
            "gain": final.get("gain", 0.0),
            "gain_ci95": final.get("gain_ci95", [0.0, 0.0]),
            "significant": final.get("significant", False),
            "n_eval": rows[0]["n"],
            "evals": rows,
            "tasks": per_task,
        }
    report |= {
        "seconds": seconds,
        "adopted_stages": stages.adopted(),
        "rounds": [r.report_json() for r in done],
        "stopped": stopped.report_json() if stopped else None,
        "settings": dict(stages.settings),
        **(extra or {}),
        "machine": machine(),
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    for task, rows in per_task.items():
        name = "before_after.png" if task == report.get("task") else f"{task}.png"
        plots.plot_before_after(rows, out / name, f"{task}, {title}")
    if done:
        by_round = {r.round: r.label.score_distribution for r in done}
        plots.plot_scores(by_round, out / "mbr_scores.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown.render_markdown(report, header))
    LOG.info("wrote %s, %s and the PNGs", out / "report.md", out / "report.json")
    return report
