"""The hf engine's CPU speed-ups: packed linears and the bf16 prompt cache.

On a CPU two things keep the N samples of a question cheap next to one: the
linear layers run through oneDNN with weights packed once
(``pack_linear_weights``), and where bf16 is native the stored prompt cache of
a float32 model is bf16 (``prompt_kv_dtype``). ``sealong bench decode`` times
and profiles a step.
"""

from __future__ import annotations

import logging
from typing import Any

from axolotl_sealong.sampling.base import cpu_has_native_bf16

LOG = logging.getLogger(__name__)


def _packed_forward(op: Any, packed: Any, bias: Any, x: Any) -> Any:
    return op(x, packed, bias, "none", [], "")


def pack_linear_weights(model: Any) -> int:
    """Run the model's CPU linears through oneDNN with weights packed once.

    torch's plain CPU linear re-lays out the weight on every call; decoding N
    samples calls each linear with N rows, where that layout work costs about
    as much as the product. With the layout done once, a 2K-prompt decode step
    of the embedded model went 69 -> 49 ms for one sample and 103 -> 72 ms for
    eight (float32, 2 cores, 2026-11-24, ``sealong bench decode``, engines
    hf-torch-linear vs hf-fp32kv). The packed copy is extra memory (the
    model's size again); float32 and, where oneDNN supports it, bfloat16.
    Returns how many layers were packed (0 when oneDNN is missing).
    """
    import functools

    import torch

    mkldnn = torch.ops.mkldnn
    if not (
        torch.backends.mkldnn.is_available()
        and hasattr(mkldnn, "_reorder_linear_weight")
        and hasattr(mkldnn, "_linear_pointwise")
    ):
        return 0
    dtypes = {torch.float32}
    if mkldnn._is_mkldnn_bf16_supported():
        dtypes.add(torch.bfloat16)
    count = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        weight = module.weight
        if weight.device.type != "cpu" or weight.dtype not in dtypes:
            continue
        # the layout oneDNN picks for an 8-row batch (N samples) also serves
        # the prompt's thousands of rows at the same speed
        packed = mkldnn._reorder_linear_weight(weight.detach(), 8)
        bias = None if module.bias is None else module.bias.detach()
        # the op is looked up once here, not on each of a step's ~200 calls
        forward = functools.partial(
            _packed_forward, mkldnn._linear_pointwise, packed, bias
        )
        module.forward = forward  # type: ignore[method-assign]
        count += 1
    return count


def prompt_kv_dtype(kv: str, method: str, model_dtype: Any, device: str) -> Any:
    """The stored prompt cache's dtype, or None for the model's own.

    ``auto`` is bfloat16 under a float32 model on a CPU that computes bf16
    natively (AVX512-BF16 or AMX): there the N samples' prompt attention runs
    about twice as fast. With packed linears, 2K prompt, 128 new tokens, this
    2-core CPU (2026-11-24, ``sealong bench sampling``, two runs): N=8 12.6 and
    13.0 s vs 16.3 and 14.4 s with a float32 cache; N=1 about the same (10.4 to
    11.3 s). Attention outputs stay within 2 % of float32 (tested).
    """
    import torch

    if method != "shared_prefix":
        if kv != "auto":
            LOG.warning(
                "hf kv_cache_dtype %s applies to method shared_prefix only: the "
                "%s method keeps the model's dtype",
                kv,
                method,
            )
        return None
    if kv != "auto":
        return None if getattr(torch, kv) == model_dtype else getattr(torch, kv)
    native = device == "cpu" and model_dtype == torch.float32 and cpu_has_native_bf16()
    return torch.bfloat16 if native else None


def pack_or_warn(model: Any) -> int:
    count = pack_linear_weights(model)
    if not count:
        LOG.warning(
            "hf packed_linear: oneDNN cannot pack this model's linears here "
            "(not a CPU, or a dtype other than float32/bfloat16); using torch's"
        )
    return count
