"""test_mbr: the slow half (models, end-to-end runs); the fast half is
tests/test_mbr.py.
"""

from builders import question_rows
from test_mbr import _length_similarity

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.mbr import (
    scores_from_similarity,
    select_pair,
)


def test_pipeline_labels_with_a_registered_utility_and_rule(
    toy_registered, tiny_llama_dir, tmp_path
):
    """End to end: no embedder is checked or loaded (the path does not exist)."""
    from axolotl_sealong.core.pipeline import label, read_rows

    rows = question_rows(
        3,
        context="Passage 1:\nZorvan{i} is Kel{i}.",
        question="Zorvan{i}?",
        answers=None,
    )
    cfg = LabelConfig(
        model=str(tiny_llama_dir),
        num_samples=4,
        max_new_tokens=12,
        cache_dir=str(tmp_path / "c"),
        utility="toy_length",
        rejected="toy_first",
        embedder=str(tmp_path / "no_embedder"),
    )
    label(cfg, rows, tmp_path / "out", progress=False)
    scored = read_rows(tmp_path / "out" / "scored.jsonl")
    assert len(scored) == 3
    pairs = 0
    for row in scored:
        live = [i for i, t in enumerate(row["samples"]) if t.strip()]
        texts = [row["samples"][i] for i in live]
        if len(texts) < 2:
            continue
        want = select_pair(
            scores_from_similarity(_length_similarity(texts, None)),
            texts,
            "toy_first",
        )
        assert row["chosen"] == live[want.chosen]
        if want.rejected is not None:
            assert row["rejected"] == live[want.rejected]
            pairs += 1
    assert pairs  # the toy rule made at least one preference pair
