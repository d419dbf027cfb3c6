"""How a vLLM server spreads one model over the visible GPUs: the parallel plan.

An 8B model fits one 80 GB GPU, so eight data-parallel replicas (vLLM's
``--data-parallel-size``; for a dense model each replica is an independent
engine) label faster than one engine split eight ways, and need no all-reduce.
Tensor parallel is used only when one GPU cannot hold a replica: the smallest
size that fits and that vLLM accepts for the model's heads. vLLM's rules
(checked in the 0.20.0, 0.23.0 and 0.34.0 sources): the attention heads must
divide by TP (``ModelConfig.verify_with_parallel_config``); the KV heads must
divide by TP, or TP by them (``QKVParallelLinear`` replicates KV heads then);
the MLP's intermediate size must divide by TP (``ColumnParallelLinear``'s
``divide``). Qwen2.5-7B has 28 heads and 4 KV heads: TP 1, 2 or 4, never 8.

Whether a replica fits is an estimate, printed with its terms: weights (the
checkpoint's size when its safetensors index is local, else counted from the
config) split over TP, plus a fixed reserve for activations and CUDA graphs,
plus the KV cache of one question with all its samples (prompt up to
``max_model_len`` once, shared by prefix caching, plus N x ``max_new_tokens``),
all under ``gpu_memory_utilization`` of one GPU. Settings the user gives win:
a TP or DP that vLLM would refuse is refused here, before anything starts,
with the numbers; one that the estimate says does not fit only warns (a
quantized checkpoint or ``--kv-cache-dtype`` in ``vllm_server_args`` can make
it fit).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

GIB = 2**30
MIB = 2**20
# activations of the profiling run, CUDA graphs, NCCL and the CUDA context
RESERVE_GIB = 4.0


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs from a model's config (no weights)."""

    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int | None
    vocab: int
    tied: bool
    dtype_bytes: int = 2
    weight_bytes: int | None = None  # the checkpoint's, when known
    params: int = 0

    @property
    def weights(self) -> int:
        return self.weight_bytes or self.params * self.dtype_bytes

    @property
    def weights_source(self) -> str:
        return "checkpoint index" if self.weight_bytes else "counted from config"

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """K and V of one token on one GPU of a TP group."""
        per_gpu = max(1, self.kv_heads // tp)
        return 2 * self.layers * per_gpu * self.head_dim * self.dtype_bytes

    def tp_problem(self, tp: int) -> str | None:
        """Why vLLM would refuse this tensor-parallel size, or None."""
        if tp < 1:
            return f"tensor parallel size {tp} is not a positive number"
        if self.heads % tp:
            return (
                f"{self.name} has {self.heads} attention heads, which tensor "
                f"parallel size {tp} does not divide"
            )
        if self.kv_heads % tp and tp % self.kv_heads:
            return (
                f"{self.name} has {self.kv_heads} KV heads: tensor parallel size "
                f"{tp} neither divides them nor is a multiple of them"
            )
        if self.intermediate and self.intermediate % tp:
            return (
                f"{self.name}'s MLP size {self.intermediate} does not divide by "
                f"tensor parallel size {tp}"
            )
        return None

    def valid_tps(self, up_to: int) -> list[int]:
        return [t for t in range(1, max(1, up_to) + 1) if self.tp_problem(t) is None]


def shape_from_config(
    config: Any, name: str, dtype: str = "auto", weight_bytes: int | None = None
) -> ModelShape:
    """A transformers config (its text part for multimodal ones) as a shape."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(text.hidden_size)
    heads = int(text.num_attention_heads)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    layers = int(text.num_hidden_layers)
    inter = getattr(text, "intermediate_size", None)
    vocab = int(text.vocab_size)
    tied = bool(getattr(text, "tie_word_embeddings", False))
    mlp = 3 * hidden * int(inter) if inter else 8 * hidden * hidden
    attn = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim
    params = layers * (attn + mlp + 2 * hidden) + vocab * hidden * (1 if tied else 2)
    dtype_bytes = 4 if dtype == "float32" else 2
    return ModelShape(
        name=name,
        layers=layers,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        hidden=hidden,
        intermediate=int(inter) if inter else None,
        vocab=vocab,
        tied=tied,
        dtype_bytes=dtype_bytes,
        weight_bytes=weight_bytes if dtype_bytes == 2 else None,
        params=params,
    )


def checkpoint_bytes(path: str) -> int | None:
    """The weights' size from a local safetensors index, if there is one."""
    index = Path(path).expanduser() / "model.safetensors.index.json"
    try:
        size = json.loads(index.read_text())["metadata"]["total_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(size) if isinstance(size, int | float) and size > 0 else None


def model_shape(
    model: str, revision: str | None = None, dtype: str = "auto"
) -> ModelShape | None:
    """The model's shape from its config (a local folder or the hub); None if
    the config cannot be read (the server would fail to load it anyway)."""
    from transformers import AutoConfig

    from axolotl_sealong.common.models import resolve_model

    path = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
        weights = checkpoint_bytes(path)
        return shape_from_config(config, Path(model).name, dtype, weights)
    except (OSError, ValueError, AttributeError, TypeError) as err:
        LOG.warning("parallel plan: cannot read the config of %s: %s", model, err)
        return None


@dataclass
class ParallelPlan:
    """Tensor- and data-parallel sizes for one server, and why."""

    tp: int
    dp: int
    gpus: int  # visible
    how: str  # "auto", "set", "cpu"
    gpu_mib: int | None = None
    need_gib: float | None = None  # per GPU of one replica, estimated
    budget_gib: float | None = None
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def used(self) -> int:
        return self.tp * self.dp

    def summary(self) -> str:
        if self.how == "cpu":
            return "CPU: one engine (no tensor or data parallel)"
        idle = self.gpus - self.used
        text = (
            f"{self.dp} data-parallel replica(s) x tensor parallel {self.tp} = "
            f"{self.used} of {self.gpus} visible GPU(s) ({self.how})"
        )
        return text + (f"; {idle} GPU(s) idle" if idle else "")

    def log(self) -> None:
        LOG.info("vllm parallel plan: %s", self.summary())
        for line in self.lines:
            LOG.info("vllm parallel plan:   %s", line)
        for line in self.warnings:
            LOG.warning("vllm parallel plan: %s", line)


@dataclass(frozen=True)
class _Sizing:
    """The memory terms of one replica, for a given tensor-parallel size."""

    shape: ModelShape
    max_model_len: int
    num_samples: int
    max_new_tokens: int
    budget: float | None  # bytes per GPU vLLM may use

    def terms(self, tp: int) -> tuple[int, int, float]:
        """(weights, KV cache, total incl. reserve) in bytes per GPU."""
        weights = self.shape.weights // tp
        kv_tokens = self.max_model_len + self.num_samples * self.max_new_tokens
        kv = kv_tokens * self.shape.kv_bytes_per_token(tp)
        return weights, kv, weights + kv + RESERVE_GIB * GIB

    def fits(self, tp: int) -> bool:
        return self.budget is None or self.terms(tp)[2] <= self.budget


def plan_parallel(
    shape: ModelShape | None,
    gpus: int,
    gpu_mib: int | None,
    *,
    max_model_len: int,
    num_samples: int,
    max_new_tokens: int,
    utilization: float = 0.85,
    tp: int | None = None,
    dp: int | None = None,
    replicas: bool = True,
    cuda: bool = True,
) -> ParallelPlan:
    """The plan; a ValueError (with the numbers) for one vLLM would refuse.

    ``replicas=False``: the in-process engine, which has no data parallel:
    the largest valid TP that the GPUs hold, so no GPU is left idle.
    """
    if not cuda:
        return ParallelPlan(tp or 1, dp or 1, 0, "set" if tp or dp else "cpu")
    _check_sizes(shape, gpus, tp, dp, replicas)
    sizing = None
    if shape is not None:
        budget = utilization * gpu_mib * MIB if gpu_mib else None
        sizing = _Sizing(shape, max_model_len, num_samples, max_new_tokens, budget)
    warnings = []
    if sizing is None:
        chosen_tp = tp or 1
        warnings.append(
            "the model's config could not be read: no head or memory check; "
            f"tensor parallel {chosen_tp}"
        )
    elif tp is not None:
        chosen_tp = tp
    else:
        limit = gpus if dp is None else gpus // dp
        chosen_tp = _smallest_fit(sizing, limit, replicas, gpu_mib, utilization)
    chosen_dp = (dp or max(1, gpus // chosen_tp)) if replicas else 1
    if chosen_tp * chosen_dp > gpus:
        raise ValueError(
            f"data parallel {chosen_dp} x tensor parallel {chosen_tp} needs "
            f"{chosen_tp * chosen_dp} GPUs, but {gpus} are visible: lower "
            "sealong_vllm_data_parallel_size or sealong_vllm_tensor_parallel_size"
        )
    how = "set" if tp or dp else "auto"
    plan = ParallelPlan(chosen_tp, chosen_dp, gpus, how, gpu_mib, warnings=warnings)
    if sizing is not None:
        _describe(plan, sizing, utilization)
    if plan.used < gpus:
        plan.lines.append(f"{gpus - plan.used} visible GPU(s) unused")
    return plan


def _check_sizes(
    shape: ModelShape | None, gpus: int, tp: int | None, dp: int | None, replicas: bool
) -> None:
    """Refuse what vLLM would refuse, naming the setting and the numbers."""
    if gpus < 1:
        raise ValueError(
            "the vLLM server's environment has CUDA but no GPU is visible: check "
            "CUDA_VISIBLE_DEVICES and nvidia-smi"
        )
    if dp is not None and dp > 1 and not replicas:
        raise ValueError(
            f"sealong_vllm_data_parallel_size (--vllm-data-parallel-size) = {dp}: "
            "the in-process vllm engine runs one engine; use sealong_sampler: "
            "vllm_server for data-parallel replicas"
        )
    for name, value in (("tensor", tp), ("data", dp)):
        if value is not None and value > gpus:
            raise ValueError(
                f"sealong_vllm_{name}_parallel_size (--vllm-{name}-parallel-size) "
                f"= {value}, but only {gpus} GPU(s) are visible: lower it or make "
                "more GPUs visible (CUDA_VISIBLE_DEVICES)"
            )
    problem = shape.tp_problem(tp) if shape is not None and tp is not None else None
    if problem:
        assert shape is not None
        valid = ", ".join(map(str, shape.valid_tps(gpus)))
        raise ValueError(
            f"sealong_vllm_tensor_parallel_size (--vllm-tensor-parallel-size) = "
            f"{tp}: {problem}, so vLLM would refuse to start. Sizes it accepts on "
            f"{gpus} GPU(s): {valid}; or unset it for the plan"
        )


def _smallest_fit(
    sizing: _Sizing, limit: int, replicas: bool, gpu_mib: int | None, util: float
) -> int:
    """Replicas: the smallest valid TP that fits; one engine: the largest."""
    candidates = sizing.shape.valid_tps(limit)
    if not replicas:
        candidates = list(reversed(candidates))
    chosen = next((t for t in candidates if sizing.fits(t)), None)
    if chosen is None:
        raise ValueError(_no_fit_message(sizing, limit, gpu_mib, util))
    return chosen


def _describe(plan: ParallelPlan, sizing: _Sizing, utilization: float) -> None:
    shape = sizing.shape
    weights, kv, need = sizing.terms(plan.tp)
    plan.need_gib = round(need / GIB, 1)
    plan.lines.append(
        f"{shape.name}: {shape.heads} attention / {shape.kv_heads} KV heads; "
        f"weights {shape.weights / GIB:.1f} GiB ({shape.weights_source}); "
        "tensor parallel sizes vLLM accepts here: "
        f"{', '.join(map(str, shape.valid_tps(plan.gpus)))}"
    )
    line = (
        f"per GPU of a replica: weights {weights / GIB:.1f} + KV cache "
        f"{kv / GIB:.1f} (one question: {sizing.max_model_len} + "
        f"{sizing.num_samples} x {sizing.max_new_tokens} tokens) + reserve "
        f"{RESERVE_GIB:g} = {need / GIB:.1f} GiB"
    )
    if sizing.budget is not None:
        plan.budget_gib = round(sizing.budget / GIB, 1)
        line += (
            f" of {sizing.budget / GIB:.1f} GiB ({utilization:g} of {plan.gpu_mib} MiB)"
        )
        if not sizing.fits(plan.tp):
            plan.warnings.append(
                f"by this estimate a replica needs {need / GIB:.1f} GiB per GPU "
                f"but {sizing.budget / GIB:.1f} GiB are available: the server may "
                "fail to start or run short of KV cache"
            )
    plan.lines.append(line)


def _no_fit_message(
    sizing: _Sizing, gpus: int, gpu_mib: int | None, utilization: float
) -> str:
    shape = sizing.shape
    valid = shape.valid_tps(gpus)
    largest = valid[-1] if valid else 1
    need = sizing.terms(largest)[2] / GIB
    budget = f"{utilization * (gpu_mib or 0) / 1024:.1f} GiB"
    return (
        f"{shape.name} does not fit the {gpus} visible GPU(s): even at tensor "
        f"parallel {largest} a GPU would need about {need:.1f} GiB (weights "
        f"{shape.weights / GIB:.1f} GiB in all, {shape.weights_source}; KV cache "
        f"of one question with its samples; {RESERVE_GIB:g} GiB reserve), and "
        f"{budget} is available ({utilization:g} of {gpu_mib} MiB). Make more "
        "GPUs visible, lower sequence_len / sealong_max_new_tokens / "
        "sealong_num_samples, or quantize (e.g. sealong_vllm_server_args: "
        "'--quantization fp8') and set sealong_vllm_tensor_parallel_size yourself"
    )
