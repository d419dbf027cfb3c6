"""ORPO with the paper's NLL term: response tokens only.

TRL's ``ORPOTrainer`` (which Axolotl 0.19 uses) computes the NLL part of the
ORPO loss over the *whole* chosen sequence, prompt included, for decoder-only
models (its comment: "orpo chosen nll loss is computed over the full prompt and
response"). SEALONG's reference code (XTuner ``orpo.py``) averages it over the
response tokens. With long-context prompts the difference is the method: a
20K-token context against a 300-token answer makes TRL's term almost entirely
"model the context", and on the CPU demo it taught SmolLM2 to echo the prompt's
instruction. The odds-ratio term is the same in both (TRL already scores it on
the response only).
"""

from __future__ import annotations

import types
from typing import Any

NLL_MODES = ("response", "full")


def response_nll(
    chosen_logits: Any, chosen_labels: Any, ignore_index: int = -100
) -> Any:
    """Token-mean cross-entropy over the labelled (response) positions.

    ``chosen_logits`` are TRL's, already cut to positions ``0..T-2``; they
    predict ``chosen_labels[:, 1:]``, where prompt and padding are
    ``ignore_index``.
    """
    import torch.nn.functional as F  # noqa: N812

    labels = chosen_labels[:, 1:].to(chosen_logits.device)
    return F.cross_entropy(
        chosen_logits.reshape(-1, chosen_logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=ignore_index,
    )


def use_response_nll(trainer: Any) -> None:
    """Make ``trainer`` (a TRL ORPOTrainer) use the response-only NLL."""
    if getattr(trainer, "is_encoder_decoder", False):
        return  # TRL already uses the labels there
    original = type(trainer).concatenated_forward

    def concatenated_forward(self: Any, model: Any, batch: dict[str, Any]) -> Any:
        out = list(original(self, model, batch))
        labels = self.concatenated_inputs(
            batch,
            is_encoder_decoder=False,
            padding_value=self.padding_value,
            device=self.accelerator.device,
        )["concatenated_labels"]
        len_chosen = batch["chosen_labels"].shape[0]
        ignore = getattr(self, "label_pad_token_id", -100)  # TRL pads labels with -100
        out[4] = response_nll(out[2], labels[:len_chosen], ignore)
        return tuple(out)

    trainer.concatenated_forward = types.MethodType(concatenated_forward, trainer)
