import numpy as np
import pytest

from axolotl_sealong.core.mbr import (
    answer_agreement_matrix,
    mbr_scores,
    rouge_l_matrix,
    scores_from_similarity,
    select_pair,
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
