"""The pipeline end to end with a tiny random Llama and the real MiniLM embedder."""

from __future__ import annotations

import pytest

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.pipeline import label


@pytest.mark.parametrize(
    "rows, settings, match",
    [
        ([{"ctx": "c", "question": "q"}], {}, "context field 'context' is missing"),
        ([{"context": "  ", "question": "q"}], {}, "context field 'context' is empty"),
        ([{"context": "c"}], {}, "question field 'question' is missing"),
        (
            [{"context": "c", "question": "q"}],
            {"embedder": "/no/such/embedder"},
            "sealong_embedder",
        ),
    ],
)
def test_bad_input_fails_before_any_model_loads(tmp_path, rows, settings, match):
    # the model path does not exist either: reaching the sampler would raise a
    # different error, so a match proves the check came first
    cfg = LabelConfig(
        model=str(tmp_path / "no-model"), cache_dir=str(tmp_path), **settings
    )
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        label(cfg, rows, tmp_path / "out", progress=False)
    assert not list(tmp_path.glob("*/samples.jsonl"))


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"num_samples": 1}, "num_samples must be >= 2"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"temperature": 0}, "temperature 0 makes all N samples identical"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"prompt_strategy": "cot"}, "plan_and_solve"),
        ({"rejected": "max"}, "lower_half"),
    ],
)
def test_invalid_settings_are_rejected(settings, match):
    with pytest.raises(ValueError, match=match):
        LabelConfig(**settings)


def test_unknown_yaml_key_lists_valid_keys():
    with pytest.raises(
        ValueError, match="sealong_num_sample \\(did you mean sealong_num_samples\\?\\)"
    ):
        LabelConfig.from_yaml_dict({"sealong_num_sample": 4})
    cfg = LabelConfig.from_yaml_dict({"base_model": "m", "sealong_num_samples": 4})
    assert cfg.model == "m" and cfg.num_samples == 4
