from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from axolotl_sealong.core.config import LabelConfig, describe_validation_error
from axolotl_sealong.core.mbr import (
    REJECTED_RULES,
    UTILITIES,
    answer_agreement_matrix,
    mbr_scores,
    register_rejected_rule,
    register_utility,
    rouge_l_matrix,
    scores_from_similarity,
    select_pair,
    similarity_matrix,
    utility_needs_embeddings,
)


def test_mbr_scores_against_hand_computed_case():
    # unit vectors at 0, 90 and 45 degrees: cos = 0, 1/sqrt2, 1/sqrt2
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    r = 1 / np.sqrt(2)
    expected = np.array([(0 + r) / 2, (0 + r) / 2, (r + r) / 2])
    np.testing.assert_allclose(mbr_scores(e), expected)
    # not normalised on input: scale must not matter (cosine)
    np.testing.assert_allclose(mbr_scores(e * [[3.0], [0.5], [7.0]]), expected)


def test_same_ranking_as_papers_mean_including_self():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(32, 16))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    paper = (e @ e.T).mean(1)  # the reference code: self-similarity included
    np.testing.assert_array_equal(np.argsort(mbr_scores(e)), np.argsort(paper))
    assert int(np.argmax(mbr_scores(e))) == int(np.argmax(paper))


def test_scores_need_two_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        scores_from_similarity(np.ones((1, 1)))


def test_n_equals_two_picks_first_and_rejects_second():
    e = np.array([[1.0, 0.0], [0.6, 0.8]])
    s = mbr_scores(e)
    assert s[0] == s[1]
    sel = select_pair(s, ["a", "b"])
    assert (sel.chosen, sel.rejected) == (0, 1)  # tie -> lowest index


def test_ties_go_to_lowest_index():
    sel = select_pair(np.array([0.2, 0.9, 0.9, 0.1]), ["a", "b", "c", "d"], "min")
    assert sel.chosen == 1 and sel.rejected == 3


def test_lower_half_pick_is_seeded_and_uniform_over_lower_half():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4])
    texts = [str(i) for i in range(8)]
    lower = {1, 3, 5, 7}
    picks = [
        select_pair(scores, texts, "lower_half", rng=np.random.default_rng(s)).rejected
        for s in range(200)
    ]
    assert set(picks) == lower
    counts = np.bincount(picks, minlength=8)[sorted(lower)]
    assert counts.min() > 25  # roughly uniform: 50 expected each
    again = [
        select_pair(scores, texts, "lower_half", rng=np.random.default_rng(s)).rejected
        for s in range(200)
    ]
    assert picks == again


def test_identical_samples_make_no_pair():
    sel = select_pair(np.array([0.5, 0.5, 0.5]), ["same", "same ", " same"])
    assert sel.rejected is None and sel.skip_reason == "identical_samples"


def test_duplicates_of_chosen_are_never_rejected():
    texts = ["A", "A", "B", "A"]
    scores = np.array([0.9, 0.9, 0.1, 0.2])
    for s in range(20):
        sel = select_pair(scores, texts, rng=np.random.default_rng(s))
        assert texts[sel.rejected] == "B"


def test_margin_skips_near_ties():
    scores = np.array([0.50, 0.49, 0.48])
    sel = select_pair(scores, ["a", "b", "c"], margin=0.05)
    assert sel.skip_reason == "below_margin" and sel.rejected is None
    assert select_pair(scores, ["a", "b", "c"], margin=0.01).rejected is not None


def test_rouge_l_and_answer_agreement_utilities():
    texts = ["the answer is paris", "so the answer is paris", "the answer is rome"]
    r = rouge_l_matrix(texts)
    assert r[0, 1] > r[0, 2] and np.allclose(r, r.T)
    # LCS("the answer is paris", "the answer is rome") = 3 of 4 words
    assert r[0, 2] == pytest.approx(0.75)
    a = answer_agreement_matrix(texts)
    assert a[0, 1] == 1.0 and a[0, 2] == 0.0
    assert int(np.argmin(scores_from_similarity(a))) == 2


def test_bad_rule_is_named():
    with pytest.raises(ValueError, match="lower_half"):
        select_pair(np.array([1.0, 0.0]), ["a", "b"], rule="max")


# A fixed example pinned from the if/elif dispatch the registries replaced
# (issue 16): every built-in utility and rule must keep these scores and picks.
FIXED_TEXTS = [
    "the answer is paris",
    "so the answer is paris",
    "the answer is rome",
    "answer: paris",
    "paris",
    "rome it is",
]


@pytest.mark.parametrize(
    ("utility", "scores", "picks"),
    [
        (
            "embedding",
            [-0.0736, 0.1838, -0.0409, -0.0186, 0.2651, -0.2072],
            {"lower_half": (4, 0), "min": (4, 5)},
        ),
        (
            "rouge_l",
            [0.5983, 0.5421, 0.4071, 0.4476, 0.28, 0.1643],
            {"lower_half": (0, 4), "min": (0, 5)},
        ),
        (
            "answer",
            [0.6, 0.6, 0.0, 0.6, 0.6, 0.0],
            {"lower_half": (0, 2), "min": (0, 2)},
        ),
    ],
)
def test_builtin_utilities_and_rules_keep_their_picks(utility, scores, picks):
    emb = np.random.default_rng(0).normal(size=(6, 4))
    got = scores_from_similarity(similarity_matrix(utility, FIXED_TEXTS, emb))
    np.testing.assert_allclose(got, scores, atol=5e-5)
    assert set(picks) == set(REJECTED_RULES)  # a new rule gets a row here
    for rule, pair in picks.items():
        sel = select_pair(got, FIXED_TEXTS, rule, rng=np.random.default_rng(1))
        assert (sel.chosen, sel.rejected) == pair, rule


def test_builtin_rules_pinned_over_seeds():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    picks = {
        rule: [
            select_pair(
                scores, FIXED_TEXTS, rule, rng=np.random.default_rng(s)
            ).rejected
            for s in range(6)
        ]
        for rule in REJECTED_RULES
    }
    assert picks == {"lower_half": [5, 3, 5, 5, 5, 5], "min": [1, 1, 1, 1, 1, 1]}


def test_registries_list_names_in_registration_order():
    assert list(UTILITIES) == ["embedding", "rouge_l", "answer"]
    assert list(REJECTED_RULES) == ["lower_half", "min"]
    assert utility_needs_embeddings("embedding")
    assert not utility_needs_embeddings("rouge_l")
    with pytest.raises(ValueError, match="needs embeddings"):
        similarity_matrix("embedding", ["a", "b"])


def _length_similarity(
    texts: Sequence[str], embeddings: np.ndarray | None
) -> np.ndarray:
    """Samples of similar length agree (a toy utility for the registry tests)."""
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    return 1.0 / (1.0 + np.abs(lengths[:, None] - lengths[None, :]))


def _first_candidate(
    scores: np.ndarray, candidates: Sequence[int], rng: np.random.Generator
) -> int:
    """The lowest-index sample unlike the chosen one."""
    return candidates[0]


@pytest.fixture
def toy_registered() -> Iterator[None]:
    """Register the toy utility and rule by decorator; always unregister them."""
    register_utility("toy_length")(_length_similarity)
    try:
        register_rejected_rule("toy_first")(_first_candidate)
        try:
            yield
        finally:
            REJECTED_RULES.remove("toy_first")
    finally:
        UTILITIES.remove("toy_length")


def test_registered_names_become_valid_settings(toy_registered):
    cfg = LabelConfig(utility="toy_length", rejected="toy_first")
    assert (cfg.utility, cfg.rejected) == ("toy_length", "toy_first")
    assert not utility_needs_embeddings("toy_length")
    texts = ["aaaa", "aaa", "aaaaa", "a", "aaaa"]
    scores = scores_from_similarity(similarity_matrix("toy_length", texts))
    sel = select_pair(scores, texts, "toy_first")
    assert (sel.chosen, sel.rejected) == (0, 1)  # "aaaa" wins; first unlike it


def test_unregistered_names_are_invalid_again():
    with pytest.raises(ValidationError) as err:
        LabelConfig(utility="toy_length")
    assert describe_validation_error(err.value) == (
        "sealong_utility (--utility) = 'toy_length': "
        "use one of embedding, rouge_l, answer"
    )


def test_unknown_names_list_the_registered_ones(toy_registered):
    with pytest.raises(ValidationError) as err:
        LabelConfig(utility="bleu", rejected="max")
    msg = describe_validation_error(err.value)
    assert (
        "sealong_utility (--utility) = 'bleu': use one of embedding, rouge_l, " in msg
    )
    assert "answer, toy_length" in msg
    assert "sealong_rejected (--rejected) = 'max': use one of lower_half, min, " in msg
    with pytest.raises(ValueError, match="unknown utility 'bleu': use one of .*toy"):
        similarity_matrix("bleu", ["a", "b"])
    with pytest.raises(ValueError, match="rejected rule 'max': .*toy_first$"):
        select_pair(np.array([1.0, 0.0]), ["a", "b"], rule="max")


def test_duplicate_registration_raises(toy_registered):
    with pytest.raises(ValueError, match="utility 'rouge_l' is already registered"):
        register_utility("rouge_l")(_length_similarity)
    with pytest.raises(ValueError, match="rule 'toy_first' is already registered"):
        register_rejected_rule("toy_first")(_first_candidate)
    assert list(REJECTED_RULES) == ["lower_half", "min", "toy_first"]


def test_a_rule_that_rejects_a_non_candidate_is_an_error():
    @register_rejected_rule("toy_chosen")
    def _chosen(scores, candidates, rng) -> int:
        return int(np.argmax(scores))

    try:
        with pytest.raises(ValueError, match="picked 0, not a candidate"):
            select_pair(np.array([0.9, 0.1]), ["a", "b"], "toy_chosen")
    finally:
        REJECTED_RULES.remove("toy_chosen")
