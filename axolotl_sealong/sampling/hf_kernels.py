"""What the hf engine runs at each decode step besides the model itself.

Shared-prefix ("cascade") attention, as in Hydragen (Juravsky et al. 2024):
the N samples of a question attend to ONE copy of the prompt's keys and
values. At each step the N queries of a question are stacked into one matrix
and multiplied with the prompt's keys once, each sample's own generated
tokens are kept in a small per-sample cache, and both parts go through one
softmax. It is swapped in through transformers' ``AttentionInterface``
(``register_shared_prefix_attention``), so the model's own forward code runs
unchanged; ``supports_shared_prefix`` says which models it can serve. And the
next-token draw (``sample_next``): temperature, top-p, one uniform per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from axolotl_sealong.sampling.base import SampleRequest, SamplingParams

ATTN_NAME = "sealong_shared_prefix"


@dataclass
class DecodeGroup:
    """One question in a decode batch: its prompt cache and its live samples."""

    req: SampleRequest
    prompt_len: int
    prefix: list[tuple[Any, Any]]  # per layer: keys (kv, d, P), values (kv, P, d)
    generator: Any
    tokens: list[list[int]]
    live: list[int] = field(default_factory=list)  # sample indices still decoding


@dataclass
class PrefixContext:
    """What the attention function needs besides the model's own arguments."""

    groups: list[DecodeGroup]
    rows: list[int]  # live rows per group, in batch order
    # layers whose attention received this context in the step: a model whose
    # attention drops our keyword would decode without the prompt, silently
    calls: int = 0


def shared_prefix_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    sealong_prefix: PrefixContext | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention over [shared prompt KV ; this sample's own KV], one softmax.

    ``query`` is (rows, heads, 1, d); ``key``/``value`` hold only the generated
    tokens, (rows, kv_heads, t, d). Without a prefix context (the prefill) it
    is plain SDPA.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if sealong_prefix is None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            **kwargs,
        )
    if query.shape[2] != 1:
        raise ValueError("shared-prefix attention decodes one token at a time")
    sealong_prefix.calls += 1
    layer = module.layer_idx
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    # (rows, kv, g, d): the g query heads that share one kv head side by side
    q = query.reshape(rows, kv_heads, group, dim)
    # each sample's own tokens: (rows, kv, g, t)
    own = torch.matmul(q, key.transpose(-1, -2)) * scale
    outs = []
    start = 0
    for grp, n in zip(sealong_prefix.groups, sealong_prefix.rows, strict=True):
        pk, pv = grp.prefix[layer]  # keys (kv, d, P), values (kv, P, d)
        qg = q[start : start + n]  # (n, kv, g, d)
        # all n*g queries of a kv head against the prompt keys, read once
        qs = qg.permute(1, 0, 2, 3).reshape(kv_heads, n * group, dim)
        # the prompt cache may be stored in another dtype than the model's
        shared = torch.matmul(qs.to(pk.dtype), pk).to(q.dtype) * scale  # (kv, n*g, P)
        shared = shared.reshape(kv_heads, n, group, -1).permute(1, 0, 2, 3)
        scores = torch.cat([shared, own[start : start + n]], dim=-1).float()
        probs = torch.softmax(scores, dim=-1).to(value.dtype)
        plen = pk.shape[2]
        ps = probs[..., :plen].permute(1, 0, 2, 3).reshape(kv_heads, n * group, plen)
        out_shared = torch.matmul(ps.to(pv.dtype), pv).to(value.dtype)  # (kv, n*g, d)
        out_shared = out_shared.reshape(kv_heads, n, group, dim).permute(1, 0, 2, 3)
        out_own = torch.matmul(probs[..., plen:], value[start : start + n])
        outs.append(out_shared + out_own)
        start += n
    out = torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
    # transformers expects (rows, q_len, heads, d)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


def _shared_prefix_mask(*args: Any, **kwargs: Any) -> Any:
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, **kwargs)


_REGISTERED = False


def register_shared_prefix_attention() -> None:
    """Make ``attn_implementation="sealong_shared_prefix"`` known to transformers."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, shared_prefix_attention)
    AttentionMaskInterface.register(ATTN_NAME, _shared_prefix_mask)
    _REGISTERED = True


def supports_shared_prefix(config: Any) -> tuple[bool, str]:
    """Whether the model's attention is plain causal attention over all tokens."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    if window and getattr(text, "use_sliding_window", True):
        return False, f"sliding-window attention ({window} tokens)"
    types = set(getattr(text, "layer_types", None) or ["full_attention"])
    if types != {"full_attention"}:
        return False, f"layer types {sorted(types)}"
    if getattr(text, "attention_chunk_size", None):
        return False, "chunked attention"
    return True, ""


def sample_next(
    logits: Any, params: SamplingParams, generator: Any, num: int | None = None
) -> Any:
    """Next tokens from last-position logits: greedy at T=0, else T + top-p.

    ``logits`` is (rows, vocab); with ``num`` and one row, draws ``num``
    independent tokens from that row (the first token of N samples).
    """
    import torch

    if params.temperature == 0:
        top = logits.argmax(dim=-1)
        return top.expand(num) if num is not None else top
    logits = logits.float() / params.temperature
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs[before >= params.top_p] = 0  # keeps at least the top token
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    # inverse CDF: one uniform draw per token instead of multinomial's one
    # exponential per vocabulary entry (8 ms a step for 8 rows of 49K on a CPU)
    cdf = probs.cumsum(dim=-1)
    if num is not None:
        cdf = cdf[0].expand(num, -1)
    total = cdf[:, -1:]
    draws = torch.rand(
        cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype
    )
    # strictly below the total, so the first entry whose CDF exceeds the target
    # (right=True) always has mass: a zero-mass token is never drawn
    target = torch.minimum(draws * total, torch.nextafter(total, total.new_zeros(())))
    return torch.searchsorted(cdf.contiguous(), target, right=True)[:, 0]
