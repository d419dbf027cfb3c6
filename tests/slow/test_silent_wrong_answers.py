"""Failures that used to give wrong labels without an error: the slow half (models,
end-to-end runs); the fast half is tests/test_silent_wrong_answers.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import build_tiny_causal_lm

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.pipeline import label, read_rows
from axolotl_sealong.sampling.base import SampleRequest, SamplingParams
from axolotl_sealong.sampling.hf import HFSampler

# --------------------------------------------------------------------------- #
# Blank samples
# --------------------------------------------------------------------------- #
CANNED = {
    # four blank samples agree perfectly; two real ones agree with each other
    "Where is Kel?": [
        "",
        " ",
        "\n",
        "",
        "Kel is in Zorvan.",
        "Kel lies in Zorvan.",
        "No idea, sorry.",
    ],
    # one real sample: nothing to compare it with
    "Where is Mor?": ["", "", "Mor is in Arad."],
    "Where is Tal?": ["Tal is in Ves.", "Tal is in Ves, by the river.", "Bread."],
}


class CannedSampler:
    """A real Sampler (the pipeline's interface) that returns fixed texts.

    The point is the texts, blanks included; the tokenizer is a real one.
    """

    name = "canned"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = 4096

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        for req in requests:
            question = req.user_message.split("\n\n")[1].split("\n")[0]
            yield req, CANNED[question]

    def close(self) -> None:
        pass


def test_blank_samples_never_win_mbr(tiny_tokenizer_dir, tmp_path, caplog):
    from transformers import AutoTokenizer

    rows = [{"context": "Passage 1: Kel, Mor, Tal.", "question": q} for q in CANNED]
    cfg = LabelConfig(
        num_samples=7, prompt_strategy="none", cache_dir=str(tmp_path / "c")
    )
    sampler = CannedSampler(AutoTokenizer.from_pretrained(tiny_tokenizer_dir))
    with caplog.at_level("WARNING"):
        res = label(cfg, rows, tmp_path / "out", sampler=sampler, progress=False)
    scored = {r["question"]: r for r in read_rows(tmp_path / "out" / "scored.jsonl")}
    kel = scored["Where is Kel?"]
    # chosen is one of the two agreeing real answers, rejected the odd one out
    assert kel["samples"][kel["chosen"]] in ("Kel is in Zorvan.", "Kel lies in Zorvan.")
    assert kel["samples"][kel["rejected"]] == "No idea, sorry."
    assert kel["blank_samples"] == 4
    assert kel["scores"][:4] == [None] * 4 and None not in kel["scores"][4:]
    mor = scored["Where is Mor?"]
    assert mor["chosen"] is None and mor["skip_reason"] == "blank_samples"
    assert scored["Where is Tal?"]["blank_samples"] == 0
    sft = read_rows(tmp_path / "out" / "sft.jsonl")
    chosen = [r["messages"][1]["content"] for r in sft]
    assert len(chosen) == 2 and all(c.strip() for c in chosen)
    assert res.counts["blank_samples"] == 6
    assert res.counts["questions_with_blank_samples"] == 2
    assert res.counts["no_pair_blank_samples"] == 1
    assert "left 6 blank sample(s) of 2 question(s) out of MBR" in caplog.text


# --------------------------------------------------------------------------- #
# Shared-prefix decoding on the three families
# --------------------------------------------------------------------------- #
FAMILIES = ("llama", "qwen2", "mistral")


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    return {
        f: build_tiny_causal_lm(tmp_path_factory.mktemp(f"tiny_{f}"), f)
        for f in FAMILIES
    }


def _requests(count: int = 3) -> list[SampleRequest]:
    return [
        SampleRequest(f"k{i}", f"Question {i}: who founded the city? " * (2 + i), 7 + i)
        for i in range(count)
    ]


PARAMS = SamplingParams(n=3, temperature=0.8, top_p=0.95, max_new_tokens=10, seed=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_prompt_reaches_every_layer_on_each_family(family, family_dirs):
    engine = HFSampler(str(family_dirs[family]), kv_cache_dtype="float32")
    assert engine.method == "shared_prefix"
    shared = dict(engine.sample(_requests(), PARAMS))
    layers = engine.model.config.num_hidden_layers
    assert engine.last_prefix_calls == layers
    expand = HFSampler(str(family_dirs[family]), method="expand")
    assert shared == dict(expand.sample(_requests(), PARAMS))


def _drop_keyword(engine: HFSampler, layers: slice) -> None:
    """Make attention layers lose ``sealong_prefix``, as a model that does not
    pass keyword arguments through would."""
    for layer in list(engine.model.model.layers)[layers]:
        attn = layer.self_attn
        forward = attn.forward

        def dropping(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
            kwargs.pop("sealong_prefix", None)
            return _forward(*args, **kwargs)

        attn.forward = dropping


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dropped", [slice(None), slice(1, None)], ids=["all", "one"])
def test_a_prompt_that_does_not_reach_attention_stops_the_run(
    family, dropped, family_dirs
):
    engine = HFSampler(str(family_dirs[family]))
    _drop_keyword(engine, dropped)
    with pytest.raises(RuntimeError, match=r"reached the attention of \d of 2 layers"):
        list(engine.sample(_requests(1), PARAMS))


# --------------------------------------------------------------------------- #
# expand with batched questions
# --------------------------------------------------------------------------- #
def test_sliding_window_fallback_decodes_batched_questions(tmp_path):
    """shared_prefix falls back to expand for sliding-window models; the batch
    size asked for shared_prefix no longer crashes it after the model loaded."""
    path = build_tiny_causal_lm(tmp_path / "mistral_sw", "mistral", sliding_window=16)
    engine = HFSampler(str(path), batch_questions=3)
    out = dict(engine.sample(_requests(4), PARAMS))
    assert len(out) == 4 and all(len(t) == 3 for t in out.values())
    assert engine.method == "expand" and engine.batch_questions == 1


# --------------------------------------------------------------------------- #
# trust_remote_code is a setting, not a name
# --------------------------------------------------------------------------- #
def test_an_embedder_named_jina_runs_no_remote_code_unless_asked(
    tmp_path, trust_remote_code_seen
):
    import shutil

    from axolotl_sealong.common.models import minilm_dir
    from axolotl_sealong.embedding.embedder import Embedder

    folder = tmp_path / "jina-embeddings-v2-small-en"  # a name with "jina" in it
    shutil.copytree(minilm_dir(), folder)
    Embedder(str(folder))
    assert trust_remote_code_seen == [False]
    Embedder(str(folder), trust_remote_code=True)
    assert trust_remote_code_seen == [False, True]
    assert LabelConfig().embedder_trust_remote_code is False
