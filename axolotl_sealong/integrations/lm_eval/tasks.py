"""Data loading, prompts and metrics behind the ``longbench_sealong`` lm-eval tasks.

The task YAMLs live in ``lm_eval_tasks/lm_eval/tasks/longbench_sealong/`` (source
checkout) and are installed as ``site-packages/lm_eval/tasks/longbench_sealong/``,
where lm-eval finds them with no flag. Their ``utils.py`` only forwards to the
functions here, so the logic is importable, typed and tested like the rest of
the package. Nothing here imports torch, transformers or datasets at module level.

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

Prompts too long for the model are cut in the middle of the context (LongBench's
rule) when the model's tokenizer and context length are known, by
``prompts.fit_prompt``, the function that cuts training prompts too; see
:func:`fit_context` and the task README.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from axolotl_sealong.core.metrics import extract_final_answer, sub_em
from axolotl_sealong.core.prompts import (
    build_user_prompt,
    fit_prompt,
    instruction,
    prompt_tokens,
)

LOG = logging.getLogger(__name__)

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
STRATEGY = "plan_and_solve"
#: Tokens kept free for the answer when fitting a prompt (the tasks' max_gen_toks).
DEFAULT_MAX_GEN_TOKS = 1024
TRUNCATION_MODES = ("middle", "error", "none")

_TASKS_SUBDIR = Path("lm_eval") / "tasks" / "longbench_sealong"


# --------------------------------------------------------------------------- #
# Where the task YAMLs are
# --------------------------------------------------------------------------- #
def _task_dir_candidates() -> list[Path]:
    root = Path(__file__).resolve().parents[3]  # above axolotl_sealong/
    return [
        root / "lm_eval_tasks" / _TASKS_SUBDIR,  # source checkout / editable
        root / _TASKS_SUBDIR,  # wheel: same site-packages as axolotl_sealong
    ]


def task_dir() -> Path:
    """The folder of the ``longbench_sealong`` YAMLs (for ``include_path``)."""
    for candidate in _task_dir_candidates():
        if (candidate / "_template_yaml").is_file():
            return candidate
    tried = ", ".join(str(c) for c in _task_dir_candidates())
    raise FileNotFoundError(
        f"the longbench_sealong task folder is missing (looked in {tried}); "
        "reinstall axolotl-sealong"
    )


def lm_eval_tasks_root() -> Path | None:
    """The directory lm-eval scans by default (None when lm-eval is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval.tasks")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


def found_by_default() -> bool:
    """True when lm-eval already indexes our folder with no ``--include_path``."""
    root = lm_eval_tasks_root()
    try:
        return root is not None and task_dir().resolve().is_relative_to(root)
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- #
# Reading and checking rows
# --------------------------------------------------------------------------- #
def lm_eval_argv(args: list[str]) -> list[str]:
    """The lm-eval command line: ``args`` plus ``--include_path`` when needed."""
    if not args or args[0] in ("-h", "--help"):
        return args
    if any(a == "--include_path" or a.startswith("--include_path=") for a in args):
        if not found_by_default():
            LOG.warning(
                "--include_path is set, so %s is not added: lm-eval takes one "
                "include path, and the sealong tasks are not in its own tree",
                task_dir(),
            )
        return args
    if found_by_default():
        return args
    return [*args, "--include_path", str(task_dir())]


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


# --------------------------------------------------------------------------- #
# Tokenizer, context length and truncation
# --------------------------------------------------------------------------- #
_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer ``name``, loaded once per process (the tasks share it)."""
    if name not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[name] = AutoTokenizer.from_pretrained(
            name, trust_remote_code=trust_remote_code
        )
    return _TOKENIZERS[name]


def tokenizer_name(metadata: Mapping[str, Any]) -> str | None:
    """The model's tokenizer: ``tokenizer=`` or ``pretrained=`` from model_args."""
    for key in ("tokenizer", "pretrained"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def resolve_max_length(metadata: Mapping[str, Any], tokenizer: Any) -> int | None:
    """The model's context length, found the way lm-eval's ``hf`` model finds it."""
    for key in ("max_length", "max_model_len"):
        if metadata.get(key):
            return int(metadata[key])
    name = metadata.get("pretrained")
    if isinstance(name, str) and name:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(name)
        except Exception as err:  # noqa: BLE001 - any failure means "unknown"
            LOG.info("cannot read the config of %s (%s)", name, err)
        else:
            for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
                value = getattr(config, attr, None)
                if isinstance(value, int) and value > 0:
                    return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**9:
        return limit
    return None


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_context(
    doc: dict[str, Any], tokenizer: Any, budget: int, mode: str, where: str
) -> dict[str, Any]:
    """Cut the middle of ``doc["context"]`` until the prompt fits ``budget`` tokens.

    ``mode="error"`` refuses instead. The rule is ``prompts.fit_prompt``, the
    one self-labeling uses (``pipeline.fit_prompts``): the question and
    instruction at the end and the chat header at the start are never cut
    (LongBench's official rule cuts the middle of the prompt; lm-eval's ``hf``
    model would cut the start).
    """
    strategy = doc.get("prompt_strategy") or STRATEGY
    whole = fit_prompt(
        tokenizer, doc["context"], doc["input"], strategy, budget, truncate=False
    )
    if whole is not None:
        return doc
    if mode == "error":
        total = prompt_tokens(tokenizer, doc_to_text(doc))
        raise ValueError(
            f"{where}: the prompt is {total} tokens, over the budget of {budget} "
            "(max_length - max_gen_toks); pass --metadata "
            '\'{"truncation": "middle"}\' to cut the middle of the context'
        )
    fitted = fit_prompt(tokenizer, doc["context"], doc["input"], strategy, budget)
    if fitted is None:
        raise ValueError(
            f"{where}: the prompt does not fit in {budget} tokens, even with the "
            "middle of its context cut; raise max_length or lower max_gen_toks"
        )
    return {
        **doc,
        "context": fitted.context,
        "context_tokens_cut": fitted.context_tokens_cut,
    }


def prepare_docs(
    docs: list[dict[str, Any]], metadata: Mapping[str, Any], name: str
) -> list[dict[str, Any]]:
    """Attach the tokenizer name (for ``output_tokens``) and fit the prompts."""
    mode = str(metadata.get("truncation", "middle"))
    if mode not in TRUNCATION_MODES:
        raise ValueError(
            f"metadata 'truncation' must be one of {', '.join(TRUNCATION_MODES)}, "
            f"got {mode!r}"
        )
    tok_name = tokenizer_name(metadata)
    tokenizer = None
    if tok_name:
        # loaded here, before any generation, so a bad name cannot fail the run
        # at the metric stage; output_tokens then counts words (with a warning)
        try:
            tokenizer = load_tokenizer(
                tok_name, bool(metadata.get("trust_remote_code", False))
            )
        except Exception as err:  # noqa: BLE001 - any failure: no tokenizer
            LOG.warning("%s: cannot load the tokenizer %s (%s)", name, tok_name, err)
            tok_name = None
    strategy = str(metadata.get("prompt_strategy", STRATEGY))
    try:
        instruction(strategy)
    except ValueError as err:
        raise ValueError(f"{name}: metadata 'prompt_strategy': {err}") from None
    for doc in docs:
        doc["tokenizer"] = tok_name or ""
        doc["context_tokens_cut"] = 0
        doc["prompt_strategy"] = strategy
    if mode == "none":
        return docs
    max_length = resolve_max_length(metadata, tokenizer) if tokenizer else None
    if tokenizer is None or max_length is None:
        if mode == "error":
            raise ValueError(
                f"{name}: truncation 'error' needs the model's tokenizer and length: "
                "pass pretrained= (or tokenizer=) and max_length= in --model_args "
                "or --metadata"
            )
        LOG.warning(
            "%s: the model's tokenizer or context length is unknown, so the task "
            "does not fit prompts; the backend's rule applies (hf cuts the start)",
            name,
        )
        return docs
    reserve = int(metadata.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
    budget = max_length - reserve
    fitted = [
        fit_context(doc, tokenizer, budget, mode, f"{name} doc {doc['id']}")
        for doc in docs
    ]
    cut = sum(1 for doc in fitted if doc["context_tokens_cut"])
    if cut:
        LOG.warning(
            "%s: cut the middle of %d of %d contexts to fit %d tokens "
            "(max_length %d - max_gen_toks %d)",
            name,
            cut,
            len(fitted),
            budget,
            max_length,
            reserve,
        )
    return fitted


# --------------------------------------------------------------------------- #
# custom_dataset loaders (called as f(**metadata, **dataset_kwargs))
# --------------------------------------------------------------------------- #
def _as_dataset(docs: list[dict[str, Any]]) -> dict[str, Any]:
    import datasets

    return {"test": datasets.Dataset.from_list(docs)}


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


def load_longbench(subset: str = "", **metadata: Any) -> dict[str, Any]:
    """``custom_dataset`` of the LongBench tasks (``dataset_kwargs: {subset: ...}``)."""
    if subset not in LONGBENCH_SUBSETS:
        raise ValueError(
            f"unknown LongBench subset {subset!r}: use one of "
            f"{', '.join(LONGBENCH_SUBSETS)}"
        )
    docs = longbench_docs(subset, metadata)
    return _as_dataset(prepare_docs(docs, metadata, f"longbench_sealong_{subset}"))


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
        return _count(load_tokenizer(tokenizer), text)
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
