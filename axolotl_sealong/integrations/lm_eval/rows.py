"""The tasks' rows: where they come from, read and checked.

Where the data comes from (first match wins):

* LongBench: ``--metadata '{"longbench_dir": DIR}'``, else ``$SEALONG_LONGBENCH_DIR``,
  else the Hugging Face parquet mirror ``Xnhyacinth/LongBench`` (the one lm-eval's
  own ``longbench`` tasks use; its rows wrap the context in LongBench's prompt
  and are unwrapped here, see ``MIRROR_CONTEXT``). ``DIR`` holds one
  ``<subset>.jsonl`` per subset in the LongBench schema (``context``, ``input``
  or ``question``, ``answers``).
* Synthetic held-out set: ``--metadata '{"synth_eval_path": FILE}'``, else
  ``$SEALONG_SYNTH_EVAL``, else ``<SEALONG_CACHE>/synth/eval.jsonl``. Rows have
  ``context``, ``question``, ``answers`` and ``num_tokens``.

Every row becomes a doc with ``id``, ``context``, ``input``, ``answers`` and
``length``; a row that cannot is an error naming its file and line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The five subsets of the paper's Table 2, in its column order.
PAPER_SUBSETS: tuple[str, ...] = (
    "qasper",
    "multifieldqa_en",
    "hotpotqa",
    "musique",
    "2wikimqa",
)
#: Also run by the reference code, not reported in the paper.
EXTRA_SUBSETS: tuple[str, ...] = ("narrativeqa",)
LONGBENCH_SUBSETS: tuple[str, ...] = PAPER_SUBSETS + EXTRA_SUBSETS

LONGBENCH_REPO = "Xnhyacinth/LongBench"
ENV_LONGBENCH_DIR = "SEALONG_LONGBENCH_DIR"
ENV_SYNTH_EVAL = "SEALONG_SYNTH_EVAL"


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(file:line, row)`` pairs from the package's one row reader; no rows is
    an error."""
    from axolotl_sealong.common.rows import numbered_records

    rows = list(numbered_records(path))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _require_str(row: Mapping[str, Any], names: Sequence[str], where: str) -> str:
    for name in names:
        if name in row:
            value = row[name]
            if not isinstance(value, str):
                raise ValueError(
                    f"{where}: field {name!r} must be a string, "
                    f"got {type(value).__name__}"
                )
            return value
    raise ValueError(f"{where}: missing field {' or '.join(map(repr, names))}")


def _require_answers(row: Mapping[str, Any], where: str) -> list[str]:
    if "answers" not in row:
        raise ValueError(f"{where}: missing field 'answers'")
    answers = row["answers"]
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) for a in answers)
    ):
        raise ValueError(
            f"{where}: field 'answers' must be a non-empty list of strings"
        )
    if not any(a.strip() for a in answers):
        raise ValueError(f"{where}: field 'answers' has only empty strings")
    return list(answers)


# The default source, the Hugging Face mirror Xnhyacinth/LongBench, is not
# THUDM's schema. It is built by NVIDIA/kvpress's
# evaluation/benchmarks/longbench/create_huggingface_dataset.py (read at kvpress
# commit 8bb29b9c; unchanged in what it writes since it was added in 6c90873,
# 2025-03-19, and pushed to Xnhyacinth/LongBench by its author), which, per
# subset, from THUDM/LongBench's rows:
#   context  <- context_prefix[task].format(context=...): LongBench's own task
#               prompt wrapped around the passages ("Answer the question based on
#               the given passages. Only give me the answer ...");
#   question <- question_template[task].format(input=...) ("Question: {input}\n",
#               "\n\n" for narrativeqa and qasper); the column `input` renamed;
#   + answer_prefix ("Answer:"), task, max_new_tokens; answers, length, dataset,
#     language, all_classes and _id kept.
# Taken as they are, those columns would put LongBench's "only give the answer"
# instruction inside the SEALONG prompt and a "Question:" label before the
# question. Rows in that layout are unwrapped back to THUDM's context and input
# (and refused if the wrapper does not match, rather than used wrongly).
_PASSAGES = (
    "Answer the question based on the given passages. Only give me the answer "
    "and do not output any other words."
)
_PASSAGES_CONTEXT = (
    _PASSAGES
    + "\n\nThe following are given passages.\n{context}\n\n"
    + _PASSAGES
    + "\n\n"
)
_QASPER_RULE = (
    "as concisely as you can, using a single phrase or sentence if possible. If "
    "the question cannot be answered based on the information in the article, "
    'write "unanswerable". If the question is a yes/no question, answer "yes", '
    '"no", or "unanswerable". Do not provide any explanation.'
)
_STORY_RULE = (
    "asconcisely as you can, using a single phrase if possible. Do not provide "
    "any explanation."
)
MIRROR_CONTEXT: dict[str, str] = {
    "narrativeqa": "You are given a story, which can be either a novel or a movie "
    "script, and a question. Answer the question " + _STORY_RULE + "\n\nStory: "
    "{context}\n\nNow, answer the question based on the story " + _STORY_RULE + "\n\n",
    "qasper": "You are given a scientific article and a question. Answer the "
    "question " + _QASPER_RULE + "\n\nArticle: {context}\n\n Answer the question "
    "based on the above article " + _QASPER_RULE + "\n\n",
    "multifieldqa_en": "Read the following text and answer briefly.\n\n{context}"
    "\n\nNow, answer the following question based on the above text, only give "
    "me the answer and do not output any other words.\n\n",
    "hotpotqa": _PASSAGES_CONTEXT,
    "2wikimqa": _PASSAGES_CONTEXT,
    "musique": _PASSAGES_CONTEXT,
}
MIRROR_QUESTION: dict[str, str] = {
    subset: "Question: {input}\n\n"
    if subset in ("narrativeqa", "qasper")
    else "Question: {input}\n"
    for subset in MIRROR_CONTEXT
}


def _unwrap(template: str, slot: str, text: str) -> str | None:
    """``text`` without the template around ``{slot}``; None if it does not fit."""
    head, tail = template.split("{" + slot + "}")
    if len(text) >= len(head) + len(tail) and text.startswith(head):
        if text.endswith(tail):
            return text[len(head) : len(text) - len(tail)]
    return None


def _from_mirror_layout(
    row: Mapping[str, Any], where: str, subset: str | None
) -> tuple[str, str] | None:
    """THUDM's (context, input) of a row in the mirror's layout; None otherwise."""
    question = row.get("question")
    if subset not in MIRROR_CONTEXT or "input" in row or not isinstance(question, str):
        return None
    plain = _unwrap(MIRROR_QUESTION[subset], "input", question)
    if plain is None and "answer_prefix" not in row:
        return None  # a plain `question` column (a local file of another layout)
    context = _require_str(row, ("context",), where)
    raw = _unwrap(MIRROR_CONTEXT[subset], "context", context)
    if plain is None or raw is None:
        raise ValueError(
            f"{where}: this row has the mirror's columns (question, answer_prefix) "
            f"but its {'question' if plain is None else 'context'} is not wrapped "
            "the way NVIDIA/kvpress's create_huggingface_dataset.py wraps it, so "
            "the SEALONG prompt cannot be rebuilt from it: set "
            f"${ENV_LONGBENCH_DIR} to a folder of THUDM's <subset>.jsonl files"
        )
    return raw, plain


def normalize_longbench_row(
    row: Mapping[str, Any], where: str, index: int, subset: str | None = None
) -> dict[str, Any]:
    """A LongBench row: THUDM's (``context``, ``input``), or the mirror's layout
    (``question`` and a wrapped ``context``, unwrapped here; see above)."""
    length = row.get("length")
    mirror = _from_mirror_layout(row, where, subset)
    if mirror is not None:
        context, question = mirror
    else:
        context = _require_str(row, ("context",), where)
        question = _require_str(row, ("input", "question"), where)
    return {
        "id": str(row.get("_id") or row.get("id") or index),
        "context": context,
        "input": question,
        "answers": _require_answers(row, where),
        "length": int(length) if isinstance(length, int | float) else -1,
    }


def normalize_synth_row(
    row: Mapping[str, Any], where: str, index: int
) -> dict[str, Any]:
    """A row of ``sealong data synth --split eval``."""
    num_tokens = row.get("num_tokens")
    if "num_tokens" in row and not isinstance(num_tokens, int):
        raise ValueError(f"{where}: field 'num_tokens' must be an integer")
    return {
        "id": str(row.get("id") or row.get("_id") or index),
        "context": _require_str(row, ("context",), where),
        "input": _require_str(row, ("question",), where),
        "answers": _require_answers(row, where),
        "length": num_tokens if isinstance(num_tokens, int) else -1,
    }


def longbench_source(metadata: Mapping[str, Any]) -> Path | None:
    """The local LongBench folder, or None for the Hugging Face mirror."""
    value = metadata.get("longbench_dir") or os.environ.get(ENV_LONGBENCH_DIR)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    origin = (
        "metadata 'longbench_dir'"
        if metadata.get("longbench_dir")
        else (f"${ENV_LONGBENCH_DIR}")
    )
    if not path.is_dir():
        raise FileNotFoundError(f"{path} (from {origin}): no such folder")
    return path


def longbench_docs(subset: str, metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    folder = longbench_source(metadata)
    if folder is not None:
        path = folder / f"{subset}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: subset {subset!r} is missing from the local LongBench "
                f"folder {folder} (one <subset>.jsonl per subset)"
            )
        return [
            normalize_longbench_row(row, where, i, subset)
            for i, (where, row) in enumerate(read_jsonl(path))
        ]
    import datasets

    repo = str(metadata.get("longbench_repo") or LONGBENCH_REPO)
    try:
        rows = datasets.load_dataset(repo, subset, split="test")
    except Exception as err:
        raise RuntimeError(
            f"cannot load {repo} ({subset}, test) from the Hugging Face hub: {err}. "
            f"Offline, set ${ENV_LONGBENCH_DIR} to a folder of <subset>.jsonl files"
        ) from err
    return [
        normalize_longbench_row(row, f"{repo}/{subset} row {i}", i, subset)
        for i, row in enumerate(rows)
    ]


def synth_path(metadata: Mapping[str, Any]) -> Path:
    value = metadata.get("synth_eval_path") or os.environ.get(ENV_SYNTH_EVAL)
    if value:
        path = Path(str(value)).expanduser()
        origin = (
            "metadata 'synth_eval_path'"
            if metadata.get("synth_eval_path")
            else f"${ENV_SYNTH_EVAL}"
        )
        if not path.is_file():
            raise FileNotFoundError(f"{path} (from {origin}): no such file")
        return path
    from axolotl_sealong.common.models import cache_root

    path = cache_root() / "synth" / "eval.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"no held-out synthetic set: set ${ENV_SYNTH_EVAL} (or --metadata "
            f"'{{\"synth_eval_path\": ...}}') to the JSONL written by "
            f"`sealong data synth --split eval`; the default {path} does not exist"
        )
    return path
