"""The transformers engine: shared-prefix decoding against plain ``generate``."""

from __future__ import annotations

import pytest

from axolotl_sealong.sampling.base import SamplingParams
from axolotl_sealong.sampling.hf_kernels import sample_next


def _params(**kw) -> SamplingParams:
    base = dict(n=4, temperature=0.8, top_p=0.9, max_new_tokens=16, seed=0)
    base.update(kw)
    return SamplingParams(**base)


@pytest.mark.parametrize("num", [None, 4])
def test_sample_next_draws_from_the_tempered_top_p_distribution(num):
    import torch

    # probabilities 0.5, 0, 0.3, 0.15, 0.05 at T=1; top_p 0.9 drops the last
    probs = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.05])
    logits = probs.clamp_min(1e-30).log()[None].repeat(1 if num else 4, 1)
    gen = torch.Generator().manual_seed(0)
    params = _params(temperature=1.0, top_p=0.9)
    draws = torch.cat([sample_next(logits, params, gen, num=num) for _ in range(5000)])
    freq = torch.bincount(draws, minlength=5).double() / len(draws)
    assert freq[1] == 0 and freq[4] == 0  # zero mass, and cut by top_p
    kept = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.0]) / 0.95
    assert torch.allclose(freq, kept.double(), atol=0.01), freq
    # T=0.5 sharpens: p^2 renormalised
    sharp_params = _params(temperature=0.5, top_p=1.0)
    sharp = torch.cat(
        [sample_next(logits, sharp_params, gen, num=num) for _ in range(5000)]
    )
    freq = torch.bincount(sharp, minlength=5).double() / len(sharp)
    squared = probs.double() ** 2
    assert torch.allclose(freq, squared / squared.sum(), atol=0.01), freq
    # the same seed gives the same draws
    again = [
        sample_next(logits, params, torch.Generator().manual_seed(3), num=num)
        for _ in range(2)
    ]
    assert torch.equal(again[0], again[1])


def test_auto_prompt_cache_is_bf16_only_under_fp32_on_a_native_bf16_cpu(
    monkeypatch,
):
    import torch

    from axolotl_sealong.sampling import hf_cpu
    from axolotl_sealong.sampling.base import cpu_has_native_bf16

    pick = hf_cpu.prompt_kv_dtype
    fp32, bf16 = torch.float32, torch.bfloat16
    native = cpu_has_native_bf16()
    assert pick("auto", "shared_prefix", fp32, "cpu") == (bf16 if native else None)
    monkeypatch.setattr(hf_cpu, "cpu_has_native_bf16", lambda: True)
    assert pick("auto", "shared_prefix", fp32, "cpu") == bf16
    assert pick("auto", "shared_prefix", bf16, "cpu") is None  # already bf16
    assert pick("auto", "shared_prefix", fp32, "cuda") is None
    assert pick("auto", "expand", fp32, "cpu") is None  # one cache per sample
    assert pick("float32", "shared_prefix", fp32, "cpu") is None  # the model's
    assert pick("float16", "shared_prefix", fp32, "cuda") == torch.float16
    monkeypatch.setattr(hf_cpu, "cpu_has_native_bf16", lambda: False)
    assert pick("auto", "shared_prefix", fp32, "cpu") is None  # emulated: slower
    assert pick("bfloat16", "shared_prefix", fp32, "cpu") == bf16  # asked for


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"n": 0}, "n must be >= 1"),
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.01}, r"top_p must be in \(0, 1\]"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ],
)
def test_invalid_sampling_params_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        _params(**kw)
