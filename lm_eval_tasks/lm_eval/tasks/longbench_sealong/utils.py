"""Task hooks for lm-eval.

The logic lives in ``axolotl_sealong.integrations.lm_eval.tasks``.
lm-eval loads this file by path for every ``!function utils.*`` reference, so it
stays a thin layer of plain functions over the installed package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from axolotl_sealong.integrations.lm_eval import tasks as eval_tasks


def load_longbench(**kwargs: Any) -> dict[str, Any]:
    return eval_tasks.load_longbench(**kwargs)


def load_synth(**kwargs: Any) -> dict[str, Any]:
    return eval_tasks.load_synth(**kwargs)


def doc_to_text(doc: Mapping[str, Any]) -> str:
    return eval_tasks.doc_to_text(doc)


def process_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, float]:
    return eval_tasks.process_results(doc, results)
