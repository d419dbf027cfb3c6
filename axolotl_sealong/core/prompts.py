"""The paper's prompts, shared verbatim by self-labeling and evaluation.

SEALONG formats one user turn as ``"\\n{context}\\n\\n{question}\\n{instruction}\\n"``
(``PROMPTS["eval_longbench_qa"]`` in the reference code, with the question and
instruction joined and stripped). Leading and trailing newlines are part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

USER_TEMPLATE = "\n{context}\n\n{input}\n"

INSTRUCTIONS: dict[str, str] = {
    "plan_and_solve": (
        "Let's first understand the problem and devise a plan to solve it. "
        "Then, let's carry out the plan and solve the problem step-by-step."
    ),
    "step_by_step": "Let's think step by step.",
    "fact_and_reflection": (
        "Let's first identify the relevant information from the long context and "
        "list it. Then, carry out step-by-step reasoning based on that information, "
        "and finally, provide the answer."
    ),
    "direct_answer": "Let's answer the question directly.",
    "none": "",
}

DEFAULT_STRATEGY = "plan_and_solve"


def instruction(strategy: str) -> str:
    """Look up a reasoning instruction, naming the valid keys on a typo."""
    try:
        return INSTRUCTIONS[strategy]
    except KeyError:
        raise ValueError(
            f"unknown prompt strategy {strategy!r}: use one of "
            f"{', '.join(sorted(INSTRUCTIONS))}"
        ) from None


def build_user_prompt(
    context: str, question: str, strategy: str = DEFAULT_STRATEGY
) -> str:
    """The user message exactly as the reference code builds it."""
    body = f"{question}\n{instruction(strategy)}".strip()
    return USER_TEMPLATE.format(context=context, input=body)


def prompt_tokens(tokenizer: Any, user_message: str) -> int:
    """Tokens of the user turn as the model sees it.

    With a chat template: the one user turn plus the generation cue, as the
    engines send it (``sampling.chat_token_ids``) and as lm-eval's
    ``--apply_chat_template`` renders it; without one, the plain text.
    """
    if getattr(tokenizer, "chat_template", None):
        from axolotl_sealong.sampling.base import chat_token_ids

        return len(chat_token_ids(tokenizer, user_message))
    return len(tokenizer(user_message, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class FittedPrompt:
    """A user turn that fits its token budget."""

    message: str
    context: str
    tokens: int
    context_tokens_cut: int  # tokens removed from the middle of the context


def fit_prompt(
    tokenizer: Any,
    context: str,
    question: str,
    strategy: str,
    budget: int,
    truncate: bool = True,
) -> FittedPrompt | None:
    """The user turn, its context cut in the middle until it fits ``budget``.

    The one truncation rule of the package (LongBench's: keep the head and the
    tail of the context, drop its middle), used for training prompts
    (``pipeline.fit_prompts``) and evaluation prompts (``eval_tasks``), so a
    question is cut the same way in both. The question, the instruction and
    the chat header are never cut. ``truncate=False`` only measures. Returns
    None when the prompt cannot fit (over budget without truncation, or even
    with the context cut to nothing).
    """
    fitted, _ = fit_prompt_counted(
        tokenizer, context, question, strategy, budget, truncate
    )
    return fitted


def fit_prompt_counted(
    tokenizer: Any,
    context: str,
    question: str,
    strategy: str,
    budget: int,
    truncate: bool = True,
) -> tuple[FittedPrompt | None, int]:
    """``fit_prompt``, and the tokens of the whole prompt (context uncut), which
    it counts first: what a caller reports for a prompt that does not fit."""
    message = build_user_prompt(context, question, strategy)
    whole = total = prompt_tokens(tokenizer, message)
    if total <= budget:
        return FittedPrompt(message, context, total, 0), whole
    if not truncate:
        return None, whole
    ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    keep = len(ids) - (total - budget)
    for _ in range(8):  # decoding and re-encoding can shift a few tokens
        if keep <= 0:
            return None, whole
        head = _decode(tokenizer, ids[: keep // 2])
        tail = _decode(tokenizer, ids[len(ids) - (keep - keep // 2) :])
        message = build_user_prompt(head + tail, question, strategy)
        total = prompt_tokens(tokenizer, message)
        if total <= budget:
            return FittedPrompt(message, head + tail, total, len(ids) - keep), whole
        keep -= total - budget
    return None, whole


def _decode(tokenizer: Any, ids: list[int]) -> str:
    # the text as it was: special-token text in a context stays, no space cleanup
    return str(
        tokenizer.decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
    )
