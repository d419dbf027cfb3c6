"""The paper's ORPO NLL (response tokens only) on a real TRL ORPOTrainer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from axolotl_sealong.orpo import use_response_nll


@pytest.fixture
def trainer(tiny_llama_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    long_prompt = "the context goes on and on " * 12 + "question?"
    rows = [
        {"prompt": long_prompt, "chosen": " right answer", "rejected": " wrong"},
        {"prompt": "short question?", "chosen": " yes it is", "rejected": " no"},
    ]
    args = ORPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_length=256,
        max_completion_length=64,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
    )
    return ORPOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tok,
    )


def test_nll_covers_only_the_response(trainer) -> None:  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F  # noqa: N812

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model = trainer.model.eval()
    with torch.no_grad():
        full = trainer.concatenated_forward(model, batch)
        use_response_nll(trainer)
        ours = trainer.concatenated_forward(model, batch)
        # by hand: the chosen sequences, their response positions only
        ids = batch["chosen_input_ids"]
        labels = batch["chosen_labels"].clone()
        logits = model(ids, attention_mask=batch["chosen_attention_mask"]).logits
    want = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
    )
    response_tokens = int((labels != -100).sum())
    prompt_tokens = int(batch["prompt_attention_mask"].sum())
    assert 0 < response_tokens < prompt_tokens  # the prompt dominates TRL's mean
    assert torch.allclose(ours[4], want, atol=1e-5), (ours[4], want)
    assert not torch.allclose(full[4], want, atol=1e-3)  # TRL's: prompt included
    # the odds-ratio inputs are unchanged
    assert torch.equal(ours[0], full[0]) and torch.equal(ours[1], full[1])
