"""The paper's ORPO NLL (response tokens only) on a real TRL ORPOTrainer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from axolotl_sealong.integrations.axolotl.orpo import keep_from, use_response_nll


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
    # the odds-ratio inputs are unchanged, from a fraction of the logits
    assert torch.allclose(ours[0], full[0], atol=1e-5)
    assert torch.allclose(ours[1], full[1], atol=1e-5)
    # rows of one batch start their responses at different places: the logits
    # start at the earliest; one row alone (micro_batch_size 1) needs only its own
    assert ours[2].shape[1] < full[2].shape[1]
    one = trainer.data_collator([trainer.train_dataset[0]])
    with torch.no_grad():
        alone = trainer.concatenated_forward(model, one)
    response = int((one["chosen_labels"] != -100).sum())
    assert alone[2].shape[1] == response  # the response's logits, not the prompt's


def test_response_logits_only_give_the_same_loss_and_gradients(
    trainer, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The logits_to_keep forward against TRL's full forward + response NLL."""
    import torch

    from axolotl_sealong.integrations.axolotl import orpo

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model = trainer.model.train()
    use_response_nll(trainer)

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss, _ = trainer.get_batch_loss_metrics(model, batch, train_eval="train")
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    torch.manual_seed(0)
    fast, fast_grads = loss_and_grads()
    monkeypatch.setattr(orpo, "_takes_logits_to_keep", lambda model: False)
    torch.manual_seed(0)
    slow, slow_grads = loss_and_grads()
    assert torch.allclose(fast, slow, atol=1e-5), (fast, slow)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_keep_from_covers_the_earliest_response_token() -> None:
    import torch

    ignore = -100
    labels = torch.tensor(
        [
            [ignore, ignore, ignore, 5, 6, ignore],  # response at 3..4
            [ignore, ignore, ignore, ignore, 7, 8],  # response at 4..5
        ]
    )
    # the logit at position 2 predicts token 3: keep positions 2..5
    assert keep_from(labels) == 4
    assert keep_from(torch.full((2, 6), ignore)) == 6
    assert keep_from(torch.tensor([[1, 2, ignore]])) == 3
