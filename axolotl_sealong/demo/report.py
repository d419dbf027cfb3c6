"""The demo's report: ``sealong iterate``'s report under the demo's own header.

The tables, plots and intervals are iterate's
(:mod:`axolotl_sealong.iterate.report`, ``markdown``, ``plots``, ``stats``);
the demo adds what it built: the embedded model and its dtypes, the synthetic
questions, and which split the evaluation questions came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from axolotl_sealong.iterate import markdown


def demo_header(report: Mapping[str, Any]) -> list[str]:
    s = report["settings"]
    d = report["dtype"]
    held_out = s["eval_split"] == "eval"
    return [
        "# SEALONG demo report",
        "",
        markdown.made_by(report),
        "",
        f"Model: {report['model']}, sampled in {d['sampling']}, evaluated and "
        f"trained in {d['eval_and_train']}. "
        f"Training data: {s['num_train']} synthetic "
        f"questions ({s['min_tokens']}-{s['max_tokens']} tokens, hops {s['hops']}, "
        f"{s['distractors']} decoy chain(s))"
        + (" per round, fresh each round" if s.get("questions_per_round") else "")
        + f"; evaluation: {report['n_eval']} "
        + (
            "questions from the held-out eval split (disjoint entity names, seed "
            f"{s['eval_seed']}), never used for any choice of settings."
            if held_out
            else "questions from the dev split (training-split names, other "
            "questions): a run for choosing settings, not a held-out result."
        ),
        "",
    ]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The demo's ``report.md``."""
    return markdown.render_markdown(report, demo_header)
