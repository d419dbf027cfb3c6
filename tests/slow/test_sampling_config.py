"""Engine settings: validation before any model loads, flags, auto choice, ranks: the
slow half (models, end-to-end runs); the fast half is tests/test_sampling_config.py.
"""

from __future__ import annotations

import json

from builders import question_rows

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.integrations.axolotl.distributed import (
    RankInfo,
    merge_label_dirs,
    shard,
)
from axolotl_sealong.sampling.factory import (
    sampler_from_config,
)


def test_config_reaches_the_hf_engine(tiny_llama_dir):
    cfg = LabelConfig(model=str(tiny_llama_dir), hf_method="expand")
    engine = sampler_from_config(cfg)
    assert engine.name == "hf" and engine.method == "expand"  # type: ignore[attr-defined]
    engine.close()
    cfg = LabelConfig(model=str(tiny_llama_dir), hf_kv_cache_dtype="bfloat16")
    engine = sampler_from_config(cfg)
    assert str(engine.kv_dtype) == "torch.bfloat16"  # type: ignore[attr-defined]
    assert engine.packed_layers > 0  # type: ignore[attr-defined]  # CPU default
    engine.close()
    cfg = LabelConfig(model=str(tiny_llama_dir), hf_packed_linear=False)
    engine = sampler_from_config(cfg)
    assert engine.packed_layers == 0  # type: ignore[attr-defined]
    engine.close()


def test_shards_of_the_pipeline_merge_into_one_result(tiny_llama_dir, tmp_path):
    from axolotl_sealong.core.pipeline import label, read_rows

    rows = question_rows(
        5, context="Zorvan{i} is a city.", question="Q{i}?", answers=["x"]
    )
    cfg = LabelConfig(
        model=str(tiny_llama_dir),
        num_samples=3,
        max_new_tokens=8,
        utility="rouge_l",
        cache_dir=str(tmp_path / "c"),
    )
    parts = []
    for r in range(2):
        part = tmp_path / f"rank{r}"
        label(cfg, shard(rows, RankInfo(r, 2, r)), part, progress=False)
        parts.append(part)
    whole = label(cfg, rows, tmp_path / "one", progress=False)
    # given the questions' order, the merged files are the single run's exactly
    keys = [r["key"] for r in read_rows(tmp_path / "one" / "scored.jsonl")]
    merge_label_dirs(parts, tmp_path / "ordered", order=keys)
    merged = json.loads((tmp_path / "ordered" / "diagnostics.json").read_text())
    assert merged["counts"]["questions"] == 5
    assert merged["subem"] == whole.diagnostics["subem"]
    for name in ("sft.jsonl", "preference.jsonl", "scored.jsonl"):
        ordered = (tmp_path / "ordered" / name).read_text()
        assert ordered == (tmp_path / "one" / name).read_text(), name
