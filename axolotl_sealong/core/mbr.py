"""Minimum Bayes Risk scoring and chosen/rejected selection.

A sample's MBR score is its mean utility against the other N-1 samples: the
consensus answer scores highest. The paper's code averages over all N
(self-similarity included); that adds the same constant to every sample, so the
ranking, and every pick made from it, is identical.

Utilities (how samples become a similarity matrix) and rejected rules (which
sample is rejected) live in registries, as ``mbrs`` registers its metrics and
decoders: a new one is a function under ``@register_utility("name")`` or
``@register_rejected_rule("name")``, and the config accepts it by that name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from axolotl_sealong.common.registry import Registry
from axolotl_sealong.core.metrics import extract_final_answer, normalize_answer

# texts (and their embeddings, for utilities that need them) -> N x N similarity
SimilarityFn = Callable[[Sequence[str], np.ndarray | None], np.ndarray]
# scores, the indices that may be rejected (ascending), rng -> the rejected index
RejectFn = Callable[[np.ndarray, Sequence[int], np.random.Generator], int]


@dataclass(frozen=True)
class Utility:
    """How one question's samples become their N x N similarity matrix."""

    similarity: SimilarityFn
    needs_embeddings: bool = False


UTILITIES: Registry[Utility] = Registry("utility")
REJECTED_RULES: Registry[RejectFn] = Registry("rejected rule")


def register_utility(
    name: str, *, needs_embeddings: bool = False
) -> Callable[[SimilarityFn], SimilarityFn]:
    """Decorator: ``fn(texts, embeddings) -> N x N`` becomes utility ``name``.

    Only utilities with ``needs_embeddings`` get the sentence embeddings (the
    pipeline loads the embedder for them alone); the others get None.
    """

    def add(fn: SimilarityFn) -> SimilarityFn:
        UTILITIES.add(name, Utility(fn, needs_embeddings))
        return fn

    return add


def register_rejected_rule(name: str) -> Callable[[RejectFn], RejectFn]:
    """Decorator: ``fn(scores, candidates, rng) -> index`` becomes rule ``name``.

    ``candidates`` are the samples that may be rejected (text unlike the
    chosen one's), ascending; the rule returns one of them.
    """

    def add(fn: RejectFn) -> RejectFn:
        REJECTED_RULES.add(name, fn)
        return fn

    return add


def utility_needs_embeddings(name: str) -> bool:
    """Whether utility ``name`` scores sentence embeddings (so needs an embedder)."""
    return UTILITIES.get(name).needs_embeddings


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


@register_utility("embedding", needs_embeddings=True)
def _embedding_utility(
    texts: Sequence[str], embeddings: np.ndarray | None
) -> np.ndarray:
    """Cosine similarity of sentence embeddings, as in the paper."""
    if embeddings is None:
        raise ValueError("the embedding utility needs embeddings")
    return cosine_matrix(embeddings)


@register_utility("rouge_l")
def _rouge_l_utility(texts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
    """ROUGE-L F1 of word tokens."""
    return rouge_l_matrix(texts)


@register_utility("answer")
def _answer_utility(texts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
    """Agreement of the extracted final answers."""
    return answer_agreement_matrix(texts)


def similarity_matrix(
    utility: str, texts: Sequence[str], embeddings: np.ndarray | None = None
) -> np.ndarray:
    """The N x N utility matrix for one question's samples."""
    return UTILITIES.get(utility).similarity(texts, embeddings)


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

    Rejected = the pick of the registered ``rule`` (``lower_half``: uniform
    over the lower-scoring half, the paper; ``min``: the minimum). Samples
    whose text equals the chosen one are never rejected: such a pair teaches
    nothing. No pair is made when all samples are identical or when the
    best-worst score gap is below ``margin``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n != len(texts) or n < 2:
        raise ValueError(f"need >= 2 samples with one score each, got {n}")
    reject = REJECTED_RULES.get(rule)
    chosen = int(np.argmax(scores))
    gap = float(scores.max() - scores.min())
    best_text = texts[chosen].strip()
    distinct = [i for i in range(n) if texts[i].strip() != best_text]
    if not distinct:
        return Selection(chosen, None, gap, "identical_samples")
    if gap < margin:
        return Selection(chosen, None, gap, "below_margin")
    rejected = int(reject(scores, distinct, rng or np.random.default_rng(0)))
    if rejected not in distinct:  # a registered rule broke its contract
        raise ValueError(f"rejected rule {rule!r} picked {rejected}, not a candidate")
    return Selection(chosen, rejected, gap, None)


@register_rejected_rule("lower_half")
def _reject_lower_half(
    scores: np.ndarray, candidates: Sequence[int], rng: np.random.Generator
) -> int:
    """Uniform over the lower-scoring half, the paper."""
    order = [int(i) for i in np.argsort(scores, kind="stable")]
    pool = [i for i in order[: len(scores) // 2] if i in candidates]
    if not pool:  # every lower-half sample duplicates the chosen text
        pool = [next(i for i in order if i in candidates)]
    return pool[int(rng.integers(len(pool)))]


@register_rejected_rule("min")
def _reject_min(
    scores: np.ndarray, candidates: Sequence[int], rng: np.random.Generator
) -> int:
    """The lowest-scoring sample."""
    return next(int(i) for i in np.argsort(scores, kind="stable") if i in candidates)
