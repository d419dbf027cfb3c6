"""`sealong bench sampling` with the real vllm engine (runs in .venv-vllm only)."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from axolotl_sealong.bench.micro import available_engines, bench_sampling  # noqa: E402


def test_bench_sampling_has_a_vllm_row(model_dir):
    assert "vllm" in available_engines()
    rows = bench_sampling(["vllm"], (256,), max_new_tokens=8, n=3, model=model_dir)
    assert len(rows) == 1
    row = rows[0]
    assert row["engine"] == "vllm" and row["prompt_tokens"] == 256 and row["n"] == 3
    assert row["n1_s"] > 0 and row["n8_s"] > 0 and row["load_s"] > 0
    assert row["ratio"] == row["ratios"][0] > 0
