"""The paper's prompts, shared verbatim by self-labeling and evaluation.

SEALONG formats one user turn as ``"\\n{context}\\n\\n{question}\\n{instruction}\\n"``
(``PROMPTS["eval_longbench_qa"]`` in the reference code, with the question and
instruction joined and stripped). Leading and trailing newlines are part of it.
"""

from __future__ import annotations

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
