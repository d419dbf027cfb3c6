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

import logging
from typing import Any, ClassVar

from axolotl.core.trainers import AxolotlORPOTrainer

LOG = logging.getLogger("axolotl_sealong")


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


def keep_from(labels: Any, ignore_index: int = -100) -> int:
    """How many trailing positions' logits the response scores need.

    Rows are prompt + response, padded on the right; the logit at position
    ``p`` predicts token ``p + 1``, so the earliest response token of the batch,
    at ``first``, needs logits from ``first - 1`` on.
    """
    mask = labels != ignore_index
    width = int(labels.shape[1])
    if not bool(mask.any()):
        return width
    firsts = mask.int().argmax(dim=1)[mask.any(dim=1)]
    return width - max(int(firsts.min()) - 1, 0)


def _takes_logits_to_keep(model: Any) -> bool:
    import inspect

    base = getattr(model, "module", model)  # DDP / accelerate wrappers
    if hasattr(base, "get_base_model"):  # PEFT
        base = base.get_base_model()
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


class ResponseNLLORPOTrainer(AxolotlORPOTrainer):
    """Axolotl's ORPO trainer with the paper's NLL term (response tokens only).

    Both ORPO terms then need only the response positions' logits, so the
    forward asks the model for those alone (``logits_to_keep``) where it can:
    TRL computes (batch, length, vocab) logits and three softmax passes over
    them, which for a 16K-token prompt and a 128K vocabulary is 8 GB per
    sequence in float32. Models whose forward lacks ``logits_to_keep`` get
    TRL's forward with the NLL recomputed.

    ``SeaLongPlugin.get_trainer_cls`` returns it (through ``for_model``) for
    ``rl: orpo`` unless ``sealong_orpo_nll: full``.
    """

    # The model Axolotl loaded, used when the constructor is given none. When a
    # plugin supplies the trainer class, Axolotl 0.19's RL builder sets its
    # positional arguments to [] instead of [self.model]
    # (core/builders/rl.py:43-49, HFRLTrainerBuilder._get_trainer_cls) and
    # build() then calls trainer_cls(args=..., train_dataset=..., callbacks=...,
    # **kwargs) with no model (rl.py:316-322); axolotl PR #2883 (open) would
    # pass it. A model passed explicitly wins.
    loaded_model: ClassVar[Any] = None

    @classmethod
    def for_model(cls, model: Any) -> type[ResponseNLLORPOTrainer]:
        """This class with ``model`` as the model to train when none is passed.

        A subclass per call, so the class itself keeps no model between runs.
        """
        attrs = {"loaded_model": model, "__module__": cls.__module__}
        return type(cls.__name__, (cls,), attrs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not args and kwargs.get("model") is None:
            if self.loaded_model is None:
                raise TypeError(
                    f"{type(self).__name__} got no model: Axolotl's RL builder "
                    "passes none to a plugin's trainer class (axolotl PR #2883); "
                    "SeaLongPlugin supplies the one it saw in post_model_load, "
                    "but none was loaded"
                )
            kwargs["model"] = self.loaded_model
        super().__init__(*args, **kwargs)
        LOG.info(
            "sealong: %s: ORPO NLL term over response tokens only (the paper's)",
            type(self).__name__,
        )

    def concatenated_forward(
        self, model: Any, batch: dict[str, Any]
    ) -> tuple[Any, ...]:
        if self.is_encoder_decoder:
            return super().concatenated_forward(model, batch)  # TRL uses the labels
        ignore = getattr(self, "label_pad_token_id", -100)  # TRL pads labels with -100
        if _takes_logits_to_keep(model):
            return _response_forward(self, model, batch, ignore)
        out = list(super().concatenated_forward(model, batch))
        labels = self.concatenated_inputs(
            batch,
            is_encoder_decoder=False,
            padding_value=self.padding_value,
            device=self.accelerator.device,
        )["concatenated_labels"]
        len_chosen = batch["chosen_labels"].shape[0]
        out[4] = response_nll(out[2], labels[:len_chosen], ignore)
        return tuple(out)


def _response_forward(
    trainer: Any, model: Any, batch: dict[str, Any], ignore: int
) -> tuple[Any, ...]:
    """TRL's ``concatenated_forward`` on the response positions' logits only."""
    cat = trainer.concatenated_inputs(
        batch,
        is_encoder_decoder=False,
        padding_value=trainer.padding_value,
        device=trainer.accelerator.device,
    )
    labels = cat["concatenated_labels"]
    keep = keep_from(labels, ignore)
    kwargs = {"output_router_logits": True} if trainer.aux_loss_enabled else {}
    outputs = model(
        cat["concatenated_input_ids"],
        attention_mask=cat["concatenated_attention_mask"],
        use_cache=False,
        logits_to_keep=keep,
        **kwargs,
    )
    logits = outputs.logits  # (batch, keep, vocab): positions T-keep .. T-1
    kept = labels[:, labels.shape[1] - keep :]
    logps = trainer.get_batch_logps(
        logits, kept, average_log_prob=True, is_encoder_decoder=False
    )
    n = batch["chosen_labels"].shape[0]
    out = (
        logps[:n],
        logps[n:],
        logits[:n, :-1, :],
        logits[n:, :-1, :],
        response_nll(logits[:n, :-1, :], kept[:n], ignore),
    )
    return (*out, outputs.aux_loss) if trainer.aux_loss_enabled else out
