"""The hooks of the ``longbench_sealong`` lm-eval tasks: docs, prompt, metrics.

The task YAMLs live in ``lm_eval_tasks/lm_eval/tasks/longbench_sealong/``; their
``utils.py`` only forwards to the functions here (``load_longbench``,
``load_synth``, ``doc_to_text``, ``process_results``), so the logic is
importable, typed and tested like the rest of the package, and this module's
path is the one the shipped ``utils.py`` names: keep it. The rows come from
``rows``, their prompts are fitted to the model by ``truncation``, and
``discovery`` is where lm-eval finds the tasks. Nothing here imports torch,
transformers or datasets at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from axolotl_sealong.core.metrics import extract_final_answer, sub_em
from axolotl_sealong.core.prompts import build_user_prompt
from axolotl_sealong.integrations.lm_eval.rows import (
    LONGBENCH_SUBSETS,
    longbench_docs,
    normalize_synth_row,
    read_jsonl,
    synth_path,
)
from axolotl_sealong.integrations.lm_eval.truncation import (
    STRATEGY,
    count_tokens,
    load_tokenizer,
    prepare_docs,
)

LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# custom_dataset loaders (called as f(**metadata, **dataset_kwargs))
# --------------------------------------------------------------------------- #
def _as_dataset(docs: list[dict[str, Any]]) -> dict[str, Any]:
    import datasets

    return {"test": datasets.Dataset.from_list(docs)}


def load_longbench(subset: str = "", **metadata: Any) -> dict[str, Any]:
    """``custom_dataset`` of the LongBench tasks (``dataset_kwargs: {subset: ...}``)."""
    if subset not in LONGBENCH_SUBSETS:
        raise ValueError(
            f"unknown LongBench subset {subset!r}: use one of "
            f"{', '.join(LONGBENCH_SUBSETS)}"
        )
    docs = longbench_docs(subset, metadata)
    return _as_dataset(prepare_docs(docs, metadata, f"longbench_sealong_{subset}"))


def load_synth(**metadata: Any) -> dict[str, Any]:
    """``custom_dataset`` of ``sealong_synth``."""
    path = synth_path(metadata)
    docs = [
        normalize_synth_row(row, where, i)
        for i, (where, row) in enumerate(read_jsonl(path))
    ]
    return _as_dataset(prepare_docs(docs, metadata, "sealong_synth"))


# --------------------------------------------------------------------------- #
# Prompt and metrics
# --------------------------------------------------------------------------- #
def doc_to_text(doc: Mapping[str, Any]) -> str:
    """The paper's user turn: context, question, reasoning instruction.

    The instruction is plan-and-solve (the paper's) unless ``--metadata
    '{"prompt_strategy": ...}'`` names another, to match a model self-labeled
    with another ``sealong_prompt_strategy``.
    """
    strategy = doc.get("prompt_strategy") or STRATEGY
    return build_user_prompt(doc["context"], doc["input"], strategy)


_warned_whitespace = False


def count_output_tokens(text: str, tokenizer: str | None) -> int:
    """Tokens of the output under the model's tokenizer; whitespace words without."""
    global _warned_whitespace
    if tokenizer:
        return count_tokens(load_tokenizer(tokenizer), text)
    if not _warned_whitespace:
        _warned_whitespace = True
        LOG.warning(
            "output_tokens: the model's tokenizer is unknown (no pretrained= or "
            "tokenizer= in model_args/metadata); counting whitespace-separated words"
        )
    return len(text.split())


def process_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, float]:
    """SubEM on the whole output (the paper's), on the extracted answer, and length."""
    output = results[0]
    answers = list(doc["answers"])
    return {
        "sub_em": sub_em(output, answers),
        "sub_em_extracted": sub_em(extract_final_answer(output), answers),
        "output_tokens": float(count_output_tokens(output, doc.get("tokenizer"))),
    }
