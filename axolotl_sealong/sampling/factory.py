"""The choice of engine: a name (or a ``LabelConfig``) to an open ``Sampler``.

Engines: ``hf`` (transformers in process, shared-prefix decoding), ``vllm``
(vLLM in process), ``openai`` (OpenAI-compatible servers) and ``vllm_server``
(a ``vllm serve`` started and stopped here, sampled through the openai engine).
Each is imported only when chosen, inside :func:`make_sampler`.
"""

from __future__ import annotations

import logging
from typing import Any

from axolotl_sealong.sampling.base import Sampler, vllm_importable

LOG = logging.getLogger(__name__)

ENGINES = ("auto", "hf", "vllm", "openai", "vllm_server")


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
        from axolotl_sealong.sampling.hf import HFSampler

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
        from axolotl_sealong.sampling.vllm import VLLMSampler

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
        from axolotl_sealong.sampling.server import VLLMServerSampler

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
    from axolotl_sealong.sampling.openai import OpenAISampler

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
        "data_parallel_size": cfg.vllm_data_parallel_size,
        "gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
        "enforce_eager": cfg.vllm_enforce_eager,
        "enable_prefix_caching": cfg.vllm_enable_prefix_caching,
        "max_num_seqs": cfg.vllm_max_num_seqs,
        "seed": cfg.seed,
        # the parallel plan sizes the KV cache of one question's samples
        "num_samples": cfg.num_samples,
        "max_new_tokens": cfg.max_new_tokens,
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
            "gpu_release_timeout": cfg.vllm_server_gpu_release_timeout,
            "gpu_release_on_timeout": cfg.vllm_server_gpu_release_on_timeout,
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
