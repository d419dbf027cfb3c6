"""Minimum Bayes Risk scoring and chosen/rejected selection.

A sample's MBR score is its mean utility against the other N-1 samples: the
consensus answer scores highest. The paper's code averages over all N
(self-similarity included); that adds the same constant to every sample, so the
ranking, and every pick made from it, is identical.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from axolotl_sealong.core.metrics import extract_final_answer, normalize_answer

Utility = Literal["embedding", "rouge_l", "answer"]
RejectedRule = Literal["lower_half", "min"]
UTILITIES: tuple[str, ...] = ("embedding", "rouge_l", "answer")
REJECTED_RULES: tuple[str, ...] = ("lower_half", "min")


def cosine_matrix(embeddings: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of an (N, d) array."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, d), got shape {emb.shape}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norms == 0.0, 1.0, norms)
    return unit @ unit.T


def scores_from_similarity(sim: np.ndarray) -> np.ndarray:
    """Each row's mean similarity to the other rows (the diagonal left out)."""
    n = sim.shape[0]
    if sim.shape != (n, n) or n < 2:
        raise ValueError(f"MBR needs an N x N matrix with N >= 2, got {sim.shape}")
    return (sim.sum(axis=1) - np.diag(sim)) / (n - 1)


def mbr_scores(embeddings: np.ndarray) -> np.ndarray:
    """Each sample's mean cosine similarity to the other N-1 samples."""
    return scores_from_similarity(cosine_matrix(embeddings))


_TOKEN = re.compile(r"\w+")


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_matrix(texts: Sequence[str]) -> np.ndarray:
    """Pairwise ROUGE-L F1 on lower-cased word tokens (symmetric)."""
    toks = [_TOKEN.findall(t.lower()) for t in texts]
    n = len(toks)
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            lcs = _lcs_length(toks[i], toks[j])
            if lcs:
                p, r = lcs / len(toks[i]), lcs / len(toks[j])
                sim[i, j] = sim[j, i] = 2 * p * r / (p + r)
    return sim


def answer_agreement_matrix(texts: Sequence[str]) -> np.ndarray:
    """1 where two samples' extracted final answers agree after normalisation."""
    answers = [normalize_answer(extract_final_answer(t)) for t in texts]
    n = len(answers)
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            if answers[i] and answers[i] == answers[j]:
                sim[i, j] = sim[j, i] = 1.0
    return sim


def similarity_matrix(
    utility: str, texts: Sequence[str], embeddings: np.ndarray | None = None
) -> np.ndarray:
    """The N x N utility matrix for one question's samples."""
    if utility == "embedding":
        if embeddings is None:
            raise ValueError("the embedding utility needs embeddings")
        return cosine_matrix(embeddings)
    if utility == "rouge_l":
        return rouge_l_matrix(texts)
    if utility == "answer":
        return answer_agreement_matrix(texts)
    raise ValueError(f"unknown utility {utility!r}: use one of {', '.join(UTILITIES)}")


@dataclass(frozen=True)
class Selection:
    """The pick for one question. ``rejected`` is None when no pair is made."""

    chosen: int
    rejected: int | None
    gap: float
    skip_reason: str | None = None


def select_pair(
    scores: np.ndarray,
    texts: Sequence[str],
    rule: str = "lower_half",
    margin: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Selection:
    """Chosen = the MBR argmax (ties to the lowest index, like ``np.argmax``).

    Rejected = a uniform pick from the lower-scoring half (the paper) or the
    minimum. Samples whose text equals the chosen one are never rejected: such
    a pair teaches nothing. No pair is made when all samples are identical or
    when the best-worst score gap is below ``margin``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n != len(texts) or n < 2:
        raise ValueError(f"need >= 2 samples with one score each, got {n}")
    if rule not in REJECTED_RULES:
        raise ValueError(
            f"unknown rejected rule {rule!r}: use one of {', '.join(REJECTED_RULES)}"
        )
    chosen = int(np.argmax(scores))
    gap = float(scores.max() - scores.min())
    best_text = texts[chosen].strip()
    distinct = [i for i in range(n) if texts[i].strip() != best_text]
    if not distinct:
        return Selection(chosen, None, gap, "identical_samples")
    if gap < margin:
        return Selection(chosen, None, gap, "below_margin")
    order = [int(i) for i in np.argsort(scores, kind="stable")]
    if rule == "min":
        rejected = next(i for i in order if i in distinct)
    else:
        pool = [i for i in order[: n // 2] if i in distinct]
        if not pool:  # every lower-half sample duplicates the chosen text
            pool = [next(i for i in order if i in distinct)]
        rng = rng or np.random.default_rng(0)
        rejected = int(pool[int(rng.integers(len(pool)))])
    return Selection(chosen, rejected, gap, None)
