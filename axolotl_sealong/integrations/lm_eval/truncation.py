"""Fitting the tasks' prompts to the model: its tokenizer, its length, the cut.

Prompts too long for the model are cut in the middle of the context (LongBench's
rule) when the model's tokenizer and context length are known, by
``prompts.fit_prompt``, the function that cuts training prompts too; see
:func:`fit_context` and the task README. Nothing here imports torch or
transformers at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from axolotl_sealong.core.prompts import fit_prompt_counted, instruction

LOG = logging.getLogger(__name__)

#: The paper's reasoning instruction, unless metadata names another.
STRATEGY = "plan_and_solve"
#: Tokens kept free for the answer when fitting a prompt (the tasks' max_gen_toks).
DEFAULT_MAX_GEN_TOKS = 1024
TRUNCATION_MODES = ("middle", "error", "none")


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


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` alone (no special tokens)."""
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
    fitted, total = fit_prompt_counted(
        tokenizer,
        doc["context"],
        doc["input"],
        strategy,
        budget,
        truncate=mode != "error",
    )
    if total <= budget:  # fits whole
        return doc
    if mode == "error":
        raise ValueError(
            f"{where}: the prompt is {total} tokens, over the budget of {budget} "
            "(max_length - max_gen_toks); pass --metadata "
            '\'{"truncation": "middle"}\' to cut the middle of the context'
        )
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
