"""The transformers engine: prefill each prompt once, decode N samples from it.

``generate(num_return_sequences=N)`` recomputes a long prompt N times. Copying
the prompt's KV cache N times (``batch_repeat_interleave``) removes the
recomputation, but then every decode step reads N copies of the prompt's keys
and values, which on a CPU makes N=8 decode about 3x the N=1 decode.

Here the N samples attend to ONE copy of the prompt's keys and values
(shared-prefix attention, ``hf_kernels``). The model's own forward code runs
unchanged (projections, RoPE, norms, MLP); only its attention function is
swapped through transformers' ``AttentionInterface``, so any model whose
attention goes through that interface works (Llama, Qwen2, Mistral, ...).
Models with sliding-window or other custom attention fall back to the plain
cache expansion. On a CPU the linears are packed for oneDNN and the prompt
cache may be bf16 (``hf_cpu``). This module is the sampler: loading, the
prefill and the decode loop, and the engine's registration (``hf``).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from axolotl_sealong.common.models import resolve_model
from axolotl_sealong.sampling.base import (
    SampleRequest,
    SamplingParams,
    chat_token_ids,
    torch_dtype,
)
from axolotl_sealong.sampling.hf_cpu import pack_or_warn, prompt_kv_dtype
from axolotl_sealong.sampling.hf_kernels import (
    ATTN_NAME,
    DecodeGroup,
    PrefixContext,
    register_shared_prefix_attention,
    sample_next,
    supports_shared_prefix,
)
from axolotl_sealong.sampling.options import read_settings
from axolotl_sealong.sampling.registry import register_engine

LOG = logging.getLogger(__name__)

HF_METHODS = ("shared_prefix", "expand", "generate")
KV_DTYPES = ("auto", "float32", "bfloat16", "float16")


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


class HFSampler:
    """transformers in process, the prompt computed once per question.

    ``method``: ``shared_prefix`` (default; falls back to ``expand`` for models
    it cannot serve), ``expand`` (the prompt cache copied N times) or
    ``generate`` (plain ``generate(num_return_sequences=N)``, the reference).
    ``batch_questions`` questions are decoded together (their N samples share
    each weight read); on a CPU 1 is as fast, on a GPU more fills the device.
    ``packed_linear`` (default: on for a CPU) runs the linears through oneDNN
    with pre-packed weights (``hf_cpu.pack_linear_weights``).
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
        self.kv_dtype = prompt_kv_dtype(
            kv_cache_dtype, method, self.model.dtype, self.device
        )
        on = self.device == "cpu" if packed_linear is None else packed_linear
        self.packed_layers = pack_or_warn(self.model) if on else 0
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
    ) -> tuple[list[DecodeGroup], Any, Any]:
        """Prefill every question; the decode cache and the first tokens."""
        import torch
        from transformers import DynamicCache

        groups: list[DecodeGroup] = []
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
                DecodeGroup(
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
        self, context: PrefixContext, layers: int, step: int
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
        self, groups: list[DecodeGroup], tokens: Any, last: bool, params: SamplingParams
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
        groups: list[DecodeGroup],
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
            context = PrefixContext(groups, [len(g.live) for g in groups])
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


# HFSampler argument -> the LabelConfig setting it is read from
HF_SETTINGS = {
    "method": "hf_method",
    "batch_questions": "hf_batch_questions",
    "kv_cache_dtype": "hf_kv_cache_dtype",
    "packed_linear": "hf_packed_linear",
}


def _options(settings: Any, out_dir: Path | None) -> dict[str, Any]:
    return read_settings(settings, HF_SETTINGS)


@register_engine("hf", settings=tuple(HF_SETTINGS.values()), options=_options)
def open_hf(model: str, **kwargs: Any) -> HFSampler:
    """The factory's way in: every model setting is an ``HFSampler`` argument."""
    return HFSampler(model, **kwargs)
