"""The ``Sampler`` interface and the choice of engine.

An engine turns chat prompts into N sampled outputs each. It yields every
question as soon as its samples exist, so the pipeline can append them to the
cache and a killed run loses only the questions in flight. Engines:
``sampling_hf`` (transformers in process, shared-prefix decoding),
``sampling_vllm`` (vLLM in process), ``sampling_openai`` (OpenAI-compatible
servers) and ``sampling_server`` (a ``vllm serve`` started and stopped here,
sampled through the openai engine). Each is imported only when chosen.
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


ENGINES = ("auto", "hf", "vllm", "openai", "vllm_server")

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


def resolve_engine(name: str) -> str:
    """``auto``: vllm when it imports and a GPU is present, else hf."""
    if name not in ENGINES:
        raise ValueError(f"unknown sampler {name!r}: use one of {', '.join(ENGINES)}")
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available() and vllm_importable():
        return "vllm"
    return "hf"


def make_sampler(
    name: str,
    model: str,
    *,
    revision: str | None = None,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    max_model_len: int | None = None,
    **options: Any,
) -> Sampler:
    """Open an engine; ``options`` are that engine's own constructor arguments."""
    engine = resolve_engine(name)
    LOG.info("sampling engine: %s%s", engine, " (auto)" if name == "auto" else "")
    if engine == "hf":
        from axolotl_sealong.sampling_hf import HFSampler

        return HFSampler(
            model,
            revision=revision,
            adapter=adapter,
            dtype=dtype,
            device=device,
            max_model_len=max_model_len,
            **options,
        )
    if engine == "vllm":
        from axolotl_sealong.sampling_vllm import VLLMSampler

        if device not in (None, "cuda", "cpu"):
            raise ValueError(f"the vllm engine places the model itself; got {device}")
        return VLLMSampler(
            model,
            revision=revision,
            adapter=adapter,
            dtype=dtype,
            max_model_len=max_model_len,
            **options,
        )
    if engine == "vllm_server":
        from axolotl_sealong.sampling_server import VLLMServerSampler

        if device not in (None, "cuda", "cpu"):
            raise ValueError(f"the vllm server places the model itself; got {device}")
        return VLLMServerSampler(
            model,
            revision=revision,
            adapter=adapter,
            dtype=dtype,
            max_model_len=max_model_len,
            **options,
        )
    from axolotl_sealong.sampling_openai import OpenAISampler

    if adapter:
        raise ValueError(
            "the openai engine samples whatever the server serves: serve the "
            "adapter there (vllm serve --enable-lora --lora-modules name=PATH) and "
            "set openai_model to its name, instead of setting adapter"
        )
    return OpenAISampler(
        model, revision=revision, max_model_len=max_model_len, **options
    )


def sampler_from_config(cfg: Any, log_dir: Any = None) -> Sampler:
    """The engine a ``LabelConfig`` asks for, with that engine's settings only.

    ``log_dir``: where a managed server (``vllm_server``) writes its log.
    """
    engine = resolve_engine(cfg.sampler)
    options: dict[str, Any] = {}
    vllm_options = {
        "tensor_parallel_size": cfg.vllm_tensor_parallel_size,
        "gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
        "enforce_eager": cfg.vllm_enforce_eager,
        "enable_prefix_caching": cfg.vllm_enable_prefix_caching,
        "max_num_seqs": cfg.vllm_max_num_seqs,
        "seed": cfg.seed,
    }
    client_options = {
        "concurrency": cfg.openai_concurrency,
        "timeout": cfg.openai_timeout,
        "retries": cfg.openai_retries,
        "backoff": cfg.openai_backoff,
    }
    if engine == "hf":
        options = {
            "method": cfg.hf_method,
            "batch_questions": cfg.hf_batch_questions,
            "kv_cache_dtype": cfg.hf_kv_cache_dtype,
            "packed_linear": cfg.hf_packed_linear,
        }
    elif engine == "vllm":
        options = vllm_options
    elif engine == "vllm_server":
        options = {
            **vllm_options,
            **client_options,
            "python": cfg.vllm_server_python,
            "server_args_extra": cfg.vllm_server_args,
            "port": cfg.vllm_server_port,
            "start_timeout": cfg.vllm_server_start_timeout,
            "log_dir": log_dir,
        }
    elif engine == "openai":
        options = {
            **client_options,
            "base_urls": cfg.openai_base_urls,
            "served_model": cfg.openai_model,
            "api": cfg.openai_api,
            "api_key": cfg.openai_api_key,
        }
    return make_sampler(
        engine,
        cfg.model,
        revision=cfg.model_revision,
        adapter=cfg.adapter,
        dtype=cfg.dtype,
        device=cfg.device,
        max_model_len=cfg.max_model_len,
        **options,
    )


def __getattr__(name: str) -> Any:
    """``HFSampler`` lives in sampling_hf; keep the old import path working."""
    if name == "HFSampler":
        from axolotl_sealong.sampling_hf import HFSampler

        return HFSampler
    raise AttributeError(name)


def model_max_positions(model: str, revision: str | None = None) -> int | None:
    """The model's context limit from its config (no weights); None if unknown.

    Multimodal configs keep it in their text config.
    """
    from transformers import AutoConfig

    from axolotl_sealong.embedded import resolve_model

    try:
        config = AutoConfig.from_pretrained(resolve_model(model), revision=revision)
    except (OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text, "max_position_embeddings", None)
    return int(limit) if limit else None
