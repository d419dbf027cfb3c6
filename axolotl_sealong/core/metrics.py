"""SubEM, the paper's metric, and the final-answer extraction used beside it.

Self-labeling diagnostics and the lm-eval tasks import these same functions, so
a number printed while labeling means the same thing as one printed by lm-eval.
"""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, no punctuation or articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def sub_em(prediction: str, answers: list[str]) -> float:
    """1.0 when any normalised gold answer occurs inside the normalised prediction.

    An empty gold answer never matches: after normalisation it would be a
    substring of everything.
    """
    pred = normalize_answer(prediction)
    for answer in answers:
        gold = normalize_answer(answer)
        if gold and gold in pred:
            return 1.0
    return 0.0


_ANSWER_CUES = re.compile(
    r"(?:final answer|the answer is|answer is|answer:)\s*[:\-]?\s*(.+)",
    re.IGNORECASE,
)


def extract_final_answer(text: str) -> str:
    """The model's final answer, for metrics that must ignore the reasoning.

    The paper's prompt asks for no answer format, so this takes the text after
    the last answer cue ("the answer is", "Answer:", "final answer") and, when
    there is none, the last non-empty line. It cuts at the first line break.
    """
    matches = list(_ANSWER_CUES.finditer(text))
    if matches:
        tail = matches[-1].group(1)
    else:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        tail = lines[-1] if lines else ""
    tail = tail.strip().splitlines()[0] if tail.strip() else ""
    return tail.strip().strip("*").strip()
