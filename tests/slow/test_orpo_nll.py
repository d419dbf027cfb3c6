"""The paper's ORPO NLL (response tokens only): the trainer subclass, its loss,: the
slow half (models, end-to-end runs); the fast half is tests/test_orpo_nll.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from builders import orpo_pairs_recipe

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from axolotl_sealong.integrations.axolotl.orpo import ResponseNLLORPOTrainer  # noqa: E402

ROWS = [
    {
        "prompt": "the context goes on and on " * 12 + "question?",
        "chosen": " right answer",
        "rejected": " wrong",
    },
    {"prompt": "short question?", "chosen": " yes it is", "rejected": " no"},
]


@pytest.fixture
def trainer(tiny_llama_dir: Path, tmp_path: Path) -> ResponseNLLORPOTrainer:
    import datasets
    from axolotl.core.training_args import AxolotlORPOConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    args = AxolotlORPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_length=256,
        max_completion_length=64,
        beta=0.1,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
    )
    return ResponseNLLORPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        args=args,
        train_dataset=datasets.Dataset.from_list(ROWS),
        processing_class=tok,
    )


def _by_hand(model: Any, batch: dict[str, Any], beta: float) -> tuple[Any, Any]:
    """The paper's ORPO loss from the model's full logits: (NLL, total).

    NLL: token mean over the chosen responses. Odds ratio: on each response's
    mean token log-probability p, log odds = p - log(1 - exp(p)).
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    def response(side: str) -> tuple[Any, Any]:
        labels = batch[f"{side}_labels"][:, 1:]
        logits = model(
            batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]
        ).logits[:, :-1]
        mask = labels != -100
        logp = torch.gather(
            logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(2)
        ).squeeze(2)
        mean_logp = (logp * mask).sum(-1) / mask.sum(-1)
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
        )
        return nll, mean_logp

    nll, chosen = response("chosen")
    _, rejected = response("rejected")
    log_odds = (chosen - rejected) - (
        torch.log1p(-chosen.exp()) - torch.log1p(-rejected.exp())
    )
    return nll, nll - beta * F.logsigmoid(log_odds).mean()


def test_nll_covers_only_the_response(trainer) -> None:  # type: ignore[no-untyped-def]
    import torch
    from axolotl.core.trainers import AxolotlORPOTrainer

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model = trainer.model.eval()
    with torch.no_grad():
        stock = AxolotlORPOTrainer.concatenated_forward(trainer, model, batch)
        ours = trainer.concatenated_forward(model, batch)
        want, want_loss = _by_hand(model, batch, trainer.beta)
        loss, _ = trainer.get_batch_loss_metrics(model, batch, train_eval="train")
    labels = batch["chosen_labels"]
    response_tokens = int((labels != -100).sum())
    prompt_tokens = int(batch["prompt_attention_mask"].sum())
    assert 0 < response_tokens < prompt_tokens  # the prompt dominates TRL's mean
    assert torch.allclose(ours[4], want, atol=1e-5), (ours[4], want)
    assert not torch.allclose(stock[4], want, atol=1e-3)  # TRL's: prompt included
    assert torch.allclose(loss, want_loss, atol=1e-5), (loss, want_loss)
    # the odds-ratio inputs are unchanged, from a fraction of the logits
    assert torch.allclose(ours[0], stock[0], atol=1e-5)
    assert torch.allclose(ours[1], stock[1], atol=1e-5)
    # rows of one batch start their responses at different places: the logits
    # start at the earliest; one row alone (micro_batch_size 1) needs only its own
    assert ours[2].shape[1] < stock[2].shape[1]
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


@pytest.fixture
def loaded(tiny_llama_dir: Path, tmp_path: Path) -> Any:
    """Axolotl's config (plugin registered), model + LoRA, tokenizer, dataset."""
    import datasets
    from axolotl.cli.config import load_cfg
    from axolotl.train import setup_model_and_tokenizer

    cfg = load_cfg(str(orpo_pairs_recipe(tmp_path, tiny_llama_dir, ROWS)))
    model, tokenizer, peft_config, _ = setup_model_and_tokenizer(cfg)
    return cfg, model, tokenizer, peft_config, datasets.Dataset.from_list(ROWS)


def _build(cfg: Any, model: Any, tokenizer: Any, peft_config: Any, rows: Any) -> Any:
    from axolotl.utils.trainer import setup_trainer

    return setup_trainer(
        cfg=cfg,
        train_dataset=rows,
        eval_dataset=None,
        model=model,
        tokenizer=tokenizer,
        processor=None,
        total_num_steps=2,
        peft_config=peft_config,
    )


def _plugin() -> Any:
    from axolotl.integrations.base import PluginManager

    from axolotl_sealong import SeaLongPlugin

    (plugin,) = (
        p
        for p in PluginManager.get_instance().plugins.values()
        if isinstance(p, SeaLongPlugin)
    )
    return plugin


def test_axolotls_builder_makes_the_subclass_like_its_own_trainer(loaded: Any) -> None:
    """Ours and the default path's trainer differ only in the class's loss."""
    from axolotl.core.trainers import AxolotlORPOTrainer
    from peft import PeftModel

    cfg, model, *_ = loaded
    ours = _build(*loaded)
    cfg["sealong_orpo_nll"] = "full"
    stock = _build(*loaded)
    assert type(stock) is AxolotlORPOTrainer
    assert isinstance(ours, ResponseNLLORPOTrainer)
    assert type(ours).__mro__[2:] == type(stock).__mro__  # for_model's, ours, theirs
    assert isinstance(model, PeftModel)
    assert ours.model is model and stock.model is model  # the LoRA model
    assert ours.processing_class is stock.processing_class is loaded[2]
    assert type(ours.data_collator) is type(stock.data_collator)
    ours_args, stock_args = ours.args.to_dict(), stock.args.to_dict()
    assert ours_args == stock_args
    names = [type(c).__name__ for c in ours.callback_handler.callbacks]
    assert names == [type(c).__name__ for c in stock.callback_handler.callbacks]
    assert ours.train_dataset.column_names == stock.train_dataset.column_names
    assert ours.train_dataset[0] == stock.train_dataset[0]
    # another plugin's class first in line would drop the paper's NLL: refused
    cfg["sealong_orpo_nll"] = "response"
    _plugin().post_trainer_create(cfg, ours)
    with pytest.raises(ValueError, match="replaced SEALONG's ORPO trainer"):
        _plugin().post_trainer_create(cfg, stock)


def test_axolotls_rl_builder_passes_a_plugins_class_no_model(loaded: Any) -> None:
    """Why the plugin keeps the model: axolotl PR #2883 (open) passes it.

    If this fails, Axolotl now passes the model itself and ``for_model`` and
    ``post_model_load`` can go.
    """
    plugin = _plugin()
    assert plugin._model is loaded[1]  # post_model_load saw the LoRA model
    plugin._model = None
    with pytest.raises(TypeError, match="got no model"):
        _build(*loaded)
