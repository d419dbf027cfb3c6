"""Rows from the pipeline go through axolotl's own preference loaders unchanged."""

from __future__ import annotations

import pytest
from builders import NO_LORA_KERNELS, question_rows

from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.pipeline import label, read_rows

# every test reads rows the tiny model labels end to end (the module fixture)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def labeled(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rows")
    rows = question_rows(
        4,
        context="Passage 1:\nZorvan{i} was founded by Kel{i}.",
        question="Who founded Zorvan{i}?",
    )
    cfg = LabelConfig(
        model=str(tiny_llama_dir),
        num_samples=4,
        max_new_tokens=16,
        cache_dir=str(out / "cache"),
    )
    label(cfg, rows, out, progress=False)
    return out


def _axolotl_cfg(model, extra):
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault(
        {
            "base_model": str(model),
            "sequence_len": 2048,
            "micro_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "num_epochs": 1,
            "learning_rate": 1e-4,
            "output_dir": str(model / "axo_out"),
            # never axolotl's default ./last_run_prepared in the checkout
            "dataset_prepared_path": str(model / "axo_prepared"),
            "bf16": False,
            "fp16": False,
            "chat_template": "tokenizer_default",
            "dataset_num_proc": 1,
            **extra,
        }
    )
    cfg = validate_config(cfg)
    normalize_config(cfg)
    return cfg


@pytest.mark.parametrize(
    "rl, strategy",
    [("orpo", "chat_template.argilla"), ("dpo", "chat_template.argilla_chat")],
)
def test_preference_rows_load_in_axolotl(labeled, tiny_llama_dir, rl, strategy):
    from axolotl.common.datasets import load_preference_datasets

    path = labeled / "preference.jsonl"
    pairs = read_rows(path)
    assert pairs, "the tiny model produced no pairs"
    cfg = _axolotl_cfg(
        tiny_llama_dir,
        {
            "rl": rl,
            "datasets": [
                {
                    "path": str(path),
                    "ds_type": "json",
                    "type": strategy,
                    "split": "train",
                }
            ],
        },
    )
    meta = load_preference_datasets(cfg=cfg)
    ds = meta.train_dataset
    assert len(ds) == len(pairs)  # nothing dropped
    chosen_texts = {p["chosen"][1]["content"] for p in pairs}
    for row in ds:
        # rendered with the model's own chat template: prompt ends at the user
        # turn, chosen/rejected are the assistant replies from our pairs
        assert row["prompt"].startswith("<|im_start|>user\n\nPassage 1:\nZorvan")
        assert "step-by-step." in row["prompt"]
        assert row["chosen"].endswith("<|im_end|>") or row["chosen"].endswith(
            "<|im_end|>\n"
        )
        assert any(row["chosen"].startswith(t) for t in chosen_texts)


def test_sft_rows_load_in_axolotl(labeled, tiny_llama_dir):
    from axolotl.common.datasets import load_datasets

    path = labeled / "sft.jsonl"
    cfg = _axolotl_cfg(
        tiny_llama_dir,
        {
            "datasets": [
                {
                    "path": str(path),
                    "ds_type": "json",
                    "type": "chat_template",
                    "split": "train",
                }
            ],
            **NO_LORA_KERNELS,
        },
    )
    meta = load_datasets(cfg=cfg)
    assert len(meta.train_dataset) == len(read_rows(path))
    assert "input_ids" in meta.train_dataset.column_names
