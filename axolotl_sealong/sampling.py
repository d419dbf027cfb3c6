"""The ``Sampler`` interface and the plain transformers engine.

An engine turns chat prompts into N sampled outputs each. It yields every
question as soon as its samples exist, so the pipeline can append them to the
cache and a killed run loses only the questions in flight.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

from axolotl_sealong.embedded import resolve_model

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class SampleRequest:
    """One question: its user message and its own seed (stable across resumes)."""

    key: str
    user_message: str
    seed: int


class Sampler(Protocol):
    """What the pipeline needs from an engine."""

    name: str
    tokenizer: Any
    max_model_len: int

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]: ...

    def close(self) -> None: ...


def chat_token_ids(tokenizer: Any, user_message: str) -> list[int]:
    """The prompt as the model sees it: one user turn plus the generation cue."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}],
        add_generation_prompt=True,
        tokenize=True,
    )
    if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }[name]
    except KeyError:
        raise ValueError(
            f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16"
        ) from None


class HFSampler:
    """transformers ``generate`` with ``num_return_sequences=N``, seeded per question.

    Plain and slow on long prompts: the prompt is recomputed for each sample.
    """

    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        adapter: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        max_model_len: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        if self.tokenizer.chat_template is None:
            raise ValueError(
                f"model {model!r} has no chat template: SEALONG prompts are chat "
                "turns, so use an instruct model (or add a chat_template)"
            )
        self.model: Any = cast(
            Any,
            AutoModelForCausalLM.from_pretrained(
                path, revision=revision, dtype=_torch_dtype(dtype, self.device)
            ),
        )
        self.model.to(self.device)
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
        self.model.eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_model_len = int(max_model_len or limit or 4096)

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        import torch

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for req in requests:
            ids = torch.tensor([chat_token_ids(tok, req.user_message)])
            ids = ids.to(self.device)
            torch.manual_seed(req.seed)
            greedy = params.temperature == 0
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=not greedy,
                    temperature=None if greedy else params.temperature,
                    top_p=None if greedy else params.top_p,
                    top_k=None,
                    max_new_tokens=params.max_new_tokens,
                    num_return_sequences=params.n,
                    pad_token_id=pad,
                )
            texts = tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
            yield req, [t.strip() for t in texts]

    def close(self) -> None:
        """Free the model so a trainer can load in the same process."""
        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def make_sampler(
    name: str,
    model: str,
    *,
    revision: str | None = None,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    max_model_len: int | None = None,
) -> Sampler:
    if name == "hf":
        return HFSampler(
            model,
            revision=revision,
            adapter=adapter,
            dtype=dtype,
            device=device,
            max_model_len=max_model_len,
        )
    raise ValueError(f"unknown sampler {name!r}: use hf")
