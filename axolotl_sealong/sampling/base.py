"""The ``Sampler`` interface that every engine implements, and its helpers.

An engine turns chat prompts into N sampled outputs each. It yields every
question as soon as its samples exist, so the pipeline can append them to the
cache and a killed run loses only the questions in flight. Engines import this
module and nothing of ``factory`` (which imports them), so there is no circle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    # benchmarks only: every sample runs exactly max_new_tokens
    ignore_eos: bool = False

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


def torch_dtype(name: str, device: str) -> Any:
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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX).

    Without it torch emulates bf16, slower than float32.
    """
    import torch

    return any(
        getattr(torch.cpu, check, lambda: False)()
        for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


# What torchrun / accelerate / deepspeed / mpirun set for a rank. vLLM started
# under them would join the trainer's process group instead of making its own.
LAUNCHER_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
)


def vllm_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def model_max_positions(model: str, revision: str | None = None) -> int | None:
    """The model's context limit from its config (no weights); None if unknown.

    Multimodal configs keep it in their text config.
    """
    from transformers import AutoConfig

    from axolotl_sealong.common.models import resolve_model

    try:
        config = AutoConfig.from_pretrained(resolve_model(model), revision=revision)
    except (OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text, "max_position_embeddings", None)
    return int(limit) if limit else None


def split_urls(value: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``: the comma-separated form of a URL list."""
    return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
