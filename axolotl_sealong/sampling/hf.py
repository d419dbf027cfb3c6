"""The transformers engine: prefill each prompt once, decode N samples from it.

``generate(num_return_sequences=N)`` recomputes a long prompt N times. Copying
the prompt's KV cache N times (``batch_repeat_interleave``) removes the
recomputation, but then every decode step reads N copies of the prompt's keys
and values, which on a CPU makes N=8 decode about 3x the N=1 decode.

Here the N samples attend to ONE copy of the prompt's keys and values
(shared-prefix or "cascade" attention, as in Hydragen, Juravsky et al. 2024):
at each step the N queries of a question are stacked into one matrix and
multiplied with the prompt's keys once, each sample's own generated tokens are
kept in a small per-sample cache, and both parts go through one softmax. The
model's own forward code runs unchanged (projections, RoPE, norms, MLP); only
its attention function is swapped through transformers' ``AttentionInterface``,
so any model whose attention goes through that interface works (Llama, Qwen2,
Mistral, ...). Models with sliding-window or other custom attention fall back
to the plain cache expansion.

On a CPU two more things keep the N samples cheap next to one: the linear
layers run through oneDNN with weights packed once (``pack_linear_weights``),
and where bf16 is native the prompt cache is stored in bf16
(``_prompt_kv_dtype``). ``sealong bench decode`` times and profiles a step.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from axolotl_sealong.common.models import resolve_model
from axolotl_sealong.sampling.base import (
    SampleRequest,
    SamplingParams,
    chat_token_ids,
    cpu_has_native_bf16,
    torch_dtype,
)

LOG = logging.getLogger(__name__)

ATTN_NAME = "sealong_shared_prefix"
HF_METHODS = ("shared_prefix", "expand", "generate")
KV_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class _Group:
    """One question in a decode batch: its prompt cache and its live samples."""

    req: SampleRequest
    prompt_len: int
    prefix: list[tuple[Any, Any]]  # per layer: keys (kv, d, P), values (kv, P, d)
    generator: Any
    tokens: list[list[int]]
    live: list[int] = field(default_factory=list)  # sample indices still decoding


@dataclass
class _PrefixContext:
    """What the attention function needs besides the model's own arguments."""

    groups: list[_Group]
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
    sealong_prefix: _PrefixContext | None = None,
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


def _prompt_kv_dtype(kv: str, method: str, model_dtype: Any, device: str) -> Any:
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


def _pack_or_warn(model: Any) -> int:
    count = pack_linear_weights(model)
    if not count:
        LOG.warning(
            "hf packed_linear: oneDNN cannot pack this model's linears here "
            "(not a CPU, or a dtype other than float32/bfloat16); using torch's"
        )
    return count


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


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


class HFSampler:
    """transformers in process, the prompt computed once per question.

    ``method``: ``shared_prefix`` (default; falls back to ``expand`` for models
    it cannot serve), ``expand`` (the prompt cache copied N times) or
    ``generate`` (plain ``generate(num_return_sequences=N)``, the reference).
    ``batch_questions`` questions are decoded together (their N samples share
    each weight read); on a CPU 1 is as fast, on a GPU more fills the device.
    ``packed_linear`` (default: on for a CPU) runs the linears through oneDNN
    with pre-packed weights (``pack_linear_weights``).
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
        method: str = "shared_prefix",
        batch_questions: int = 1,
        kv_cache_dtype: str = "auto",
        packed_linear: bool | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if method not in HF_METHODS:
            raise ValueError(f"unknown hf method {method!r}: use {HF_METHODS}")
        if batch_questions < 1:
            raise ValueError("batch_questions must be >= 1")
        if method == "expand" and batch_questions > 1:
            raise ValueError(
                "hf method expand decodes one question at a time: set "
                "hf_batch_questions to 1, or use method shared_prefix"
            )
        if kv_cache_dtype not in KV_DTYPES:
            raise ValueError(
                f"unknown hf kv_cache_dtype {kv_cache_dtype!r}: use {KV_DTYPES}"
            )
        path = resolve_model(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        if self.tokenizer.chat_template is None:
            raise ValueError(
                f"model {model!r} has no chat template: SEALONG prompts are chat "
                "turns, so use an instruct model (or add a chat_template)"
            )
        if method == "shared_prefix":
            register_shared_prefix_attention()
            from transformers import AutoConfig

            ok, why = supports_shared_prefix(
                AutoConfig.from_pretrained(path, revision=revision)
            )
            if not ok:
                LOG.warning(
                    "shared-prefix attention cannot serve %s: using expand", why
                )
                method = "expand"
                if batch_questions > 1:
                    LOG.warning(
                        "expand decodes one question at a time: "
                        "hf_batch_questions %d -> 1",
                        batch_questions,
                    )
                    batch_questions = 1
        self.method = method
        self.batch_questions = batch_questions if method == "shared_prefix" else 1
        attn = ATTN_NAME if method == "shared_prefix" else "sdpa"
        self.model: Any = cast(
            Any,
            AutoModelForCausalLM.from_pretrained(
                path,
                revision=revision,
                dtype=torch_dtype(dtype, self.device),
                attn_implementation=attn,
            ),
        )
        self.model.to(self.device)
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
            self.model = self.model.merge_and_unload()
        self.model.eval()
        self.kv_dtype = _prompt_kv_dtype(
            kv_cache_dtype, method, self.model.dtype, self.device
        )
        on = self.device == "cpu" if packed_linear is None else packed_linear
        self.packed_layers = _pack_or_warn(self.model) if on else 0
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_model_len = int(max_model_len or limit or 4096)
        self.eos = _eos_ids(self.model, self.tokenizer)
        # seconds of the last batch's prefill and decode (for the benchmark)
        self.last_timing: dict[str, float] = {}
        # layers that saw the shared prompt in the last decode step (checked)
        self.last_prefix_calls = 0
        LOG.info(
            "hf sampler: %s on %s, method %s, %d question(s) per batch, prompt KV "
            "cache %s, %d linear layer(s) packed for oneDNN",
            path,
            self.device,
            self.method,
            self.batch_questions,
            f"{self.kv_dtype} ({kv_cache_dtype})"
            if self.kv_dtype
            else "in the model's dtype",
            self.packed_layers,
        )

    # -- public ---------------------------------------------------------------

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        batch: list[SampleRequest] = []
        for req in requests:
            batch.append(req)
            if len(batch) == self.batch_questions:
                yield from self._run(batch, params)
                batch = []
        if batch:
            yield from self._run(batch, params)

    def close(self) -> None:
        """Free the model so a trainer can load in the same process."""
        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- internals ------------------------------------------------------------

    def _run(
        self, batch: list[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        import torch

        with torch.inference_mode():
            if self.method == "generate":
                for req in batch:
                    yield req, self._generate(req, params)
                return
            yield from self._decode(batch, params)

    def _texts(self, tokens: list[list[int]]) -> list[str]:
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def _generate(self, req: SampleRequest, params: SamplingParams) -> list[str]:
        import torch

        ids = torch.tensor([chat_token_ids(self.tokenizer, req.user_message)])
        ids = ids.to(self.device)
        torch.manual_seed(req.seed)
        greedy = params.temperature == 0
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = self.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None,
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=params.max_new_tokens if params.ignore_eos else None,
            num_return_sequences=params.n,
            pad_token_id=pad,
        )
        return self._texts(out[:, ids.shape[1] :].tolist())

    def _prefill(self, req: SampleRequest, params: SamplingParams) -> tuple[Any, Any]:
        """The prompt's cache (batch 1) and its N first tokens."""
        import torch
        from transformers import DynamicCache

        ids = chat_token_ids(self.tokenizer, req.user_message)
        if len(ids) + params.max_new_tokens > self.max_model_len:
            raise ValueError(
                f"question {req.key}: {len(ids)} prompt tokens + "
                f"{params.max_new_tokens} new tokens exceed max_model_len "
                f"{self.max_model_len}"
            )
        x = torch.tensor([ids], device=self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        gen = torch.Generator(device=self.device).manual_seed(req.seed)
        first = sample_next(out.logits[:, -1], params, gen, num=params.n)
        return out.past_key_values, (first, gen, len(ids))

    def _start(
        self, batch: list[SampleRequest], params: SamplingParams
    ) -> tuple[list[_Group], Any, Any]:
        """Prefill every question; the decode cache and the first tokens."""
        import torch
        from transformers import DynamicCache

        groups: list[_Group] = []
        firsts = []
        cache: Any = None
        for req in batch:
            prompt_cache, (first, gen, plen) = self._prefill(req, params)
            # keys stored transposed and contiguous: the step's one matmul
            # against them then streams memory in order
            dt = self.kv_dtype or prompt_cache.layers[0].keys.dtype
            layers = [
                (
                    layer.keys[0].transpose(-1, -2).to(dt).contiguous(),
                    layer.values[0].to(dt),
                )
                for layer in prompt_cache.layers
            ]
            if self.method == "expand":
                if len(batch) > 1:
                    raise ValueError("method expand decodes one question at a time")
                prompt_cache.batch_repeat_interleave(params.n)
                cache = prompt_cache
            groups.append(
                _Group(
                    req=req,
                    prompt_len=plen,
                    prefix=layers if self.method == "shared_prefix" else [],
                    generator=gen,
                    tokens=[[] for _ in range(params.n)],
                    live=list(range(params.n)),
                )
            )
            firsts.append(first)
        if cache is None:  # shared_prefix: the samples' own tokens only
            cache = DynamicCache(config=self.model.config)
        return groups, cache, torch.cat(firsts)

    def _check_prefix_reached(
        self, context: _PrefixContext, layers: int, step: int
    ) -> None:
        """Every layer's attention must have seen the prompt in this step.

        Our attention function gets the shared prompt through a keyword that
        the model's forward passes down to its attention layers; a model whose
        attention drops it would run plain attention over the generated tokens
        only and sample without the context, with no error. Checked on every
        step (an integer compare), before any sample is returned.
        """
        self.last_prefix_calls = context.calls
        if context.calls != layers:
            raise RuntimeError(
                f"shared-prefix decoding: the prompt reached the attention of "
                f"{context.calls} of {layers} layers in decode step {step}; this "
                "model's attention does not pass keyword arguments through to "
                "the attention function, so its samples would ignore the "
                "context. Set hf_method: expand (sealong_hf_method / --hf-method)"
            )

    def _record(
        self, groups: list[_Group], tokens: Any, last: bool, params: SamplingParams
    ) -> list[int]:
        """Append this step's tokens; the batch rows that go on decoding."""
        keep: list[int] = []
        row = 0
        for grp in groups:
            still = []
            for i in grp.live:
                token = int(tokens[row])
                if params.ignore_eos or token not in self.eos:
                    grp.tokens[i].append(token)
                    if not last:
                        still.append(i)
                        keep.append(row)
                row += 1
            grp.live = still
        return keep

    def _decode(
        self, batch: list[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        import torch

        began = time.perf_counter()
        groups, cache, step_tokens = self._start(batch, params)
        prefilled = time.perf_counter()
        self.last_timing = {"prefill_s": prefilled - began, "decode_s": 0.0}
        for step in range(params.max_new_tokens):
            self.last_timing["decode_s"] = time.perf_counter() - prefilled
            rows = len(step_tokens)
            last = step + 1 == params.max_new_tokens
            keep = self._record(groups, step_tokens, last, params)
            for grp in groups:
                if not grp.live:  # every sample of this question is done
                    yield grp.req, self._texts(grp.tokens)
            groups = [g for g in groups if g.live]
            if not groups:
                return
            if len(keep) < rows:  # finished samples leave the batch
                index = torch.tensor(keep, device=self.device)
                step_tokens = step_tokens[index]
                if step > 0 or self.method == "expand":
                    cache.batch_select_indices(index)
            step_tokens = self._step(groups, cache, step_tokens, step, params)

    def _step(
        self,
        groups: list[_Group],
        cache: Any,
        tokens: Any,
        step: int,
        params: SamplingParams,
    ) -> Any:
        """One forward pass for every live sample; their next tokens."""
        import torch

        positions = torch.tensor(
            [[g.prompt_len + step] for g in groups for _ in g.live],
            device=self.device,
        )
        kwargs: dict[str, Any] = {}
        context = None
        if self.method == "shared_prefix":
            context = _PrefixContext(groups, [len(g.live) for g in groups])
            kwargs["sealong_prefix"] = context
        out = self.model(
            input_ids=tokens[:, None],
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            **kwargs,
        )
        if context is not None:
            self._check_prefix_reached(context, len(groups[0].prefix), step)
        logits = out.logits[:, -1]
        parts = []
        start = 0
        for grp in groups:
            n = len(grp.live)
            parts.append(sample_next(logits[start : start + n], params, grp.generator))
            start += n
        return torch.cat(parts)
