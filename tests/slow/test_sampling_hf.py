"""The transformers engine: shared-prefix decoding against plain ``generate``: the slow
half (models, end-to-end runs); the fast half is tests/test_sampling_hf.py.
"""

from __future__ import annotations

import pytest
from test_sampling_hf import _params

from axolotl_sealong.sampling.base import SampleRequest
from axolotl_sealong.sampling.factory import make_sampler
from axolotl_sealong.sampling.hf import HFSampler
from axolotl_sealong.sampling.hf_kernels import supports_shared_prefix


def _requests(count: int = 3) -> list[SampleRequest]:
    return [
        SampleRequest(
            f"k{i}", f"Question {i}: who founded the city? " * (2 + 3 * i), 100 + i
        )
        for i in range(count)
    ]


# Exactness against generate/expand needs the prompt cache in the model's
# float32: "auto" stores it in bf16 on CPUs with native bf16 (like this one).
EXACT = {"kv_cache_dtype": "float32"}


@pytest.fixture(scope="module")
def engines(tiny_llama_dir):
    return {
        "generate": HFSampler(str(tiny_llama_dir), method="generate"),
        "expand": HFSampler(str(tiny_llama_dir), method="expand"),
        "shared_prefix": HFSampler(str(tiny_llama_dir), **EXACT),
    }


def _run(engine, reqs, params) -> dict[str, list[str]]:
    return {req.key: texts for req, texts in engine.sample(reqs, params)}


def test_greedy_n1_matches_plain_generate(engines):
    greedy = _params(n=1, temperature=0, max_new_tokens=24)
    reference = _run(engines["generate"], _requests(), greedy)
    assert all(len(t) == 1 and t[0] for t in reference.values())
    assert _run(engines["shared_prefix"], _requests(), greedy) == reference
    assert _run(engines["expand"], _requests(), greedy) == reference


def test_greedy_n4_gives_n_copies_of_the_greedy_output(engines):
    one = _run(engines["generate"], _requests(), _params(n=1, temperature=0))
    four = _run(engines["shared_prefix"], _requests(), _params(n=4, temperature=0))
    assert four == {k: v * 4 for k, v in one.items()}


def test_fixed_seeds_give_identical_samples(engines):
    engine = engines["shared_prefix"]
    first = _run(engine, _requests(), _params())
    again = _run(engine, _requests(), _params())
    assert first == again
    assert all(len(v) == 4 for v in first.values())
    # the samples of a question differ, and a new seed changes them
    assert any(len(set(v)) > 1 for v in first.values())
    reseeded = [SampleRequest(r.key, r.user_message, r.seed + 7) for r in _requests()]
    assert _run(engine, reseeded, _params()) != first


def test_shared_prefix_samples_equal_expanded_cache_samples(engines):
    """Per-sample determinism for N>1: same draws as the N-copies cache."""
    params = _params(n=5, max_new_tokens=20)
    shared = _run(engines["shared_prefix"], _requests(), params)
    expanded = _run(engines["expand"], _requests(), params)
    assert shared == expanded


def test_finished_samples_leave_the_batch_without_changing_the_others(engines):
    # a frequent token as EOS makes samples stop at different steps, which
    # exercises the row removal in both caches
    params = _params(n=6, temperature=1.0, top_p=1.0, max_new_tokens=24)
    runs = {}
    for method in ("shared_prefix", "expand"):
        engine = engines[method]
        saved = engine.eos
        engine.eos = set(range(3, 400, 4))
        try:
            runs[method] = _run(engine, _requests(), params)
        finally:
            engine.eos = saved
    assert runs["shared_prefix"] == runs["expand"]
    lengths = {len(t) for texts in runs["expand"].values() for t in texts}
    assert len(lengths) > 1, "no sample stopped early: pick another EOS set"


def test_batching_questions_does_not_change_their_samples(tiny_llama_dir, engines):
    single = _run(engines["shared_prefix"], _requests(4), _params())
    batched = HFSampler(str(tiny_llama_dir), batch_questions=3, **EXACT)
    assert _run(batched, _requests(4), _params()) == single


def test_questions_are_yielded_one_by_one(engines):
    stream = engines["shared_prefix"].sample(_requests(3), _params(max_new_tokens=4))
    req, texts = next(stream)
    assert req.key == "k0" and len(texts) == 4
    stream.close()


def test_ignore_eos_and_top_p(engines):
    engine = engines["shared_prefix"]
    params = _params(n=3, max_new_tokens=10, ignore_eos=True)
    for _, texts in engine.sample(_requests(1), params):
        ids = [
            engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts
        ]
        assert all(len(i) >= 5 for i in ids)  # 10 tokens; decode may merge a few
    # a tiny top_p keeps only the most likely token: greedy
    nucleus = _run(engine, _requests(), _params(n=2, top_p=1e-6))
    greedy = _run(engine, _requests(), _params(n=2, temperature=0))
    assert nucleus == greedy


def test_bf16_prompt_cache_is_stored_in_bf16_and_stays_close(tiny_llama_dir):
    """kv_cache_dtype=bfloat16: half the prompt cache, bf16-close attention."""
    import torch

    engine = HFSampler(str(tiny_llama_dir), kv_cache_dtype="bfloat16")
    params = _params(n=3, max_new_tokens=6)
    with torch.inference_mode():
        groups, _, _ = engine._start(_requests(1), params)
    keys, values = groups[0].prefix[0]
    assert keys.dtype == values.dtype == torch.bfloat16
    assert engine.model.dtype == torch.float32
    # seeded and deterministic like the float32 cache
    first = _run(engine, _requests(), params)
    assert first == _run(engine, _requests(), params)
    assert all(len(v) == 3 for v in first.values())
    # the attention itself: bf16 prompt keys/values against float32 ones
    from axolotl_sealong.sampling.hf_kernels import (
        DecodeGroup,
        PrefixContext,
        shared_prefix_attention,
    )

    class Layer:
        layer_idx = 0

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 6, 1, 16, generator=gen) for _ in range(3))
    k, v = k[:, :2].repeat(1, 1, 5, 1), v[:, :2].repeat(1, 1, 5, 1)  # 2 kv heads, t=5
    pk, pv = (
        torch.randn(2, 16, 300, generator=gen),
        torch.randn(2, 300, 16, generator=gen),
    )
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        grp = DecodeGroup(_requests(1)[0], 300, [(pk.to(dt), pv.to(dt))], None, [])
        ctx = PrefixContext([grp], [4])
        out[dt] = shared_prefix_attention(Layer, q, k, v, None, sealong_prefix=ctx)[0]
    assert out[torch.bfloat16].dtype == torch.float32
    err = (out[torch.bfloat16] - out[torch.float32]).abs().max()
    assert 0 < err < 0.02 * out[torch.float32].abs().max()
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        HFSampler(str(tiny_llama_dir), kv_cache_dtype="int8")


def test_packed_linears_compute_the_same_logits(tiny_llama_dir):
    """oneDNN with packed weights: every linear swapped, logits unchanged."""
    import torch
    from transformers import AutoModelForCausalLM

    from axolotl_sealong.sampling.hf_cpu import pack_linear_weights

    def load():
        return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()

    plain, packed = load(), load()
    linears = [m for m in packed.modules() if isinstance(m, torch.nn.Linear)]
    assert pack_linear_weights(packed) == len(linears) > 0
    ids = torch.randint(0, plain.config.vocab_size, (3, 40))
    with torch.inference_mode():
        # 40 rows a call (a prompt) and 3 rows a call (decoding 3 samples)
        for x in (ids[:1], ids[:, -1:]):
            want, got = plain(input_ids=x).logits, packed(input_ids=x).logits
            assert not torch.equal(want, torch.zeros_like(want))
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    # a bf16 model is packed too where oneDNN has bf16 (this CPU: AVX512-BF16)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert pack_linear_weights(load().to(torch.bfloat16)) == len(linears)
    # an engine told not to pack keeps torch's linear
    engine = HFSampler(str(tiny_llama_dir), packed_linear=False)
    assert engine.packed_layers == 0
    assert all(
        "forward" not in vars(m)
        for m in engine.model.modules()
        if isinstance(m, torch.nn.Linear)
    )


def test_prompt_over_max_model_len_is_refused(tiny_llama_dir):
    engine = HFSampler(str(tiny_llama_dir), max_model_len=64)
    with pytest.raises(ValueError, match="exceed max_model_len 64"):
        list(engine.sample(_requests(3)[2:], _params(max_new_tokens=32)))


def test_sliding_window_models_fall_back_to_expand(tiny_llama_dir):
    from transformers import MistralConfig

    ok, why = supports_shared_prefix(MistralConfig(sliding_window=4096))
    assert not ok and "sliding" in why
    assert supports_shared_prefix(MistralConfig(sliding_window=None))[0]


def test_close_frees_the_model(tiny_llama_dir):
    engine = make_sampler("hf", str(tiny_llama_dir))
    assert engine.name == "hf"
    engine.close()
    assert getattr(engine, "model", None) is None


@pytest.mark.gpu
def test_gpu_shared_prefix_matches_expand_in_bf16(tiny_llama_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (no GPU on this machine)")
    shared = HFSampler(str(tiny_llama_dir), device="cuda", dtype="bfloat16")
    plain = HFSampler(
        str(tiny_llama_dir), device="cuda", dtype="bfloat16", method="generate"
    )
    greedy = _params(n=1, temperature=0)
    assert _run(shared, _requests(), greedy) == _run(plain, _requests(), greedy)
