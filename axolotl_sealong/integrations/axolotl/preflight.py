"""``sealong check RECIPE.yml``: everything a GPU run needs, checked in seconds.

A run samples for hours before it trains, so whatever would stop it must stop
it now: the recipe as Axolotl reads it, the packages training needs, the
questions file, the sampling environment (vLLM, torch, CUDA, the visible GPUs)
and its parallel plan, the embedder (really loaded, on the CPU, and made to
embed a sentence), and what is already done (labels folder, sample cache);
then an estimate of the labeling work. Each check is the function the run
itself calls (``label_config``, ``read_questions``, ``questions_from_rows``,
``fit_prompts``, ``inspect_server``, ``server_plan``, ``probe_embedder``,
``labels_dir``), so a recipe that passes here passes the same steps there.
Nothing here allocates GPU memory: GPUs are read with nvidia-smi, and the
server's interpreter is asked in a short subprocess.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"

# The estimate's default throughputs, per GPU (vLLM) or per process (hf on a
# CPU): assumptions, printed with the estimate and overridable. GPU: prefill
# and decode of an 8B model on one H100, from a roofline reading (prefill
# 10-20K tokens/s; decode re-reads each sample's prompt KV cache every step,
# ~3 TB/s over 128 KiB per token): not measured here.
GPU_PREFILL_TPS = 10_000.0
GPU_DECODE_TPS = 1_500.0
# hf engine on a CPU: SmolLM2-135M in float32 on the project's 2-core box
# (docs/gpu.md, "The preflight", says how they were measured).
CPU_PREFILL_TPS = 560.0
CPU_DECODE_TPS = 310.0
# mean new tokens per sample, when not given: plan-and-solve answers of an
# 8B model run to a few hundred tokens; never above max_new_tokens.
OUTPUT_TOKENS = 300


@dataclass
class Check:
    """One line of the report: what was checked, how it went, and the fix."""

    name: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)
    fix: str | None = None


@dataclass
class Assumptions:
    """The estimate's throughputs (tokens/s per GPU, or per process on a CPU)
    and mean new tokens per sample; None: the defaults above."""

    prefill_tps: float | None = None
    decode_tps: float | None = None
    output_tokens: int | None = None


@dataclass
class Report:
    recipe: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "failed": self.failed,
            "seconds": round(self.seconds, 1),
            "checks": [asdict(c) for c in self.checks],
        }

    def lines(self) -> list[str]:
        out = [f"sealong check {self.recipe}"]
        for c in self.checks:
            out.append(f"[{c.status:^4}] {c.name}: {c.summary}")
            out += [f"       {line}" for line in c.details]
            if c.fix:
                out.append(f"       fix: {c.fix}")
        counts = {s: sum(c.status == s for c in self.checks) for s in (OK, WARN, FAIL)}
        out.append(
            f"{counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failed "
            f"in {self.seconds:.1f} s"
        )
        return out


class _Stop(Exception):
    """A check failed and later ones need its result."""


@dataclass
class _State:
    """What one check hands the next."""

    path: Path
    raw: dict[str, Any] = field(default_factory=dict)
    cfg: Any = None
    label_cfg: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    questions: list[Any] = field(default_factory=list)
    kept: list[Any] = field(default_factory=list)
    todo: list[Any] = field(default_factory=list)
    served: str | None = None  # the openai server's model name, once asked
    gpus_for_estimate: int = 0
    on_gpu: bool = False


def run_checks(
    recipe: str | Path,
    assumptions: Assumptions | None = None,
    *,
    embedder: bool = True,
) -> Report:
    """Every check, in order; a failed one stops those that need its result."""
    t0 = time.perf_counter()
    state = _State(Path(recipe))
    report = Report(str(recipe))
    steps: list[tuple[str, Callable[[_State], Check], bool]] = [
        ("recipe", _recipe, True),
        ("training packages", _packages, False),
        ("sealong settings", _settings, True),
        ("questions", _questions, True),
        ("labels and sample cache", _done, False),
        ("sampling engine", _engine, False),
        ("embedder", _embedder, False),
        ("estimate", lambda s: _estimate(s, assumptions or Assumptions()), False),
    ]
    for name, step, needed in steps:
        if name == "embedder" and not embedder:
            report.checks.append(Check(name, SKIP, "not asked (--no-embedder)"))
            continue
        try:
            check = step(state)
        except _Stop as stop:
            check = stop.args[0]
        except Exception as err:  # noqa: BLE001 - a check must report, not crash
            check = Check(name, FAIL, f"{type(err).__name__}: {err}")
        check.name = name
        report.checks.append(check)
        if check.status == FAIL and needed:
            rest = [n for n, _, _ in steps[len(report.checks) :]]
            report.checks += [Check(n, SKIP, f"needs {name}") for n in rest]
            break
    report.seconds = time.perf_counter() - t0
    return report


# -- the recipe -----------------------------------------------------------------


def _recipe(state: _State) -> Check:
    """The YAML as ``axolotl train`` reads it: plugins, schema, normalisation."""
    import yaml
    from axolotl.cli.config import gpu_capabilities, prepare_plugins
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    from axolotl_sealong.integrations.axolotl.requirements import deferred

    path = state.path
    if not path.is_file():
        raise _Stop(Check("", FAIL, f"{path}: no such file", fix="give a recipe YAML"))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise _Stop(Check("", FAIL, f"{path}: not valid YAML ({err})")) from None
    if not isinstance(raw, dict):
        raise _Stop(Check("", FAIL, f"{path}: not a mapping of keys"))
    state.raw = dict(raw)
    cfg = DictDefault(raw)
    cfg.axolotl_config_path = str(path)
    with deferred():  # the packages are their own check, next
        prepare_plugins(cfg)
    caps, env_caps = gpu_capabilities()
    try:
        cfg = validate_config(cfg, capabilities=caps, env_capabilities=env_caps)
        normalize_config(cfg)  # reads base_model's config
    except OSError as err:
        raise _Stop(
            Check(
                "",
                FAIL,
                f"base_model {raw.get('base_model')!r}: its config cannot be read "
                f"({str(err).splitlines()[0]})",
                fix=f"download it while online (hf download {raw.get('base_model')})"
                " into the Hugging Face cache, or point base_model at a local "
                "model folder",
            )
        ) from None
    except Exception as err:  # noqa: BLE001 - Axolotl's own messages
        where = "a GPU" if caps.get("compute_capability") else "this machine (no GPU)"
        raise _Stop(
            Check(
                "",
                FAIL,
                f"Axolotl refuses it, validated for {where}: {err}",
                fix="change the key it names (run this check on the training "
                "node: capabilities like bf16 are read from its GPU)",
            )
        ) from None
    state.cfg = cfg
    plugins = cfg.get("plugins") or []
    details = [
        f"base_model {cfg.base_model}; rl: {getattr(cfg.rl, 'value', cfg.rl)}; "
        f"sequence_len {cfg.sequence_len}; "
        f"attention {cfg.get('attn_implementation') or 'default'}",
        f"batch: micro {cfg.micro_batch_size} x accumulation "
        f"{cfg.gradient_accumulation_steps} per rank",
    ]
    if "axolotl_sealong.SeaLongPlugin" not in plugins:
        return Check("", WARN, "validates, but without the SeaLong plugin", details)
    return Check("", OK, "Axolotl's loader accepts it (plugin merged)", details)


def _packages(state: _State) -> Check:
    import torch

    from axolotl_sealong.integrations.axolotl.requirements import (
        describe,
        training_requirements,
    )

    needs = training_requirements(state.cfg)
    if not needs:
        return Check("", OK, "the recipe needs no optional training package")
    gpu = torch.cuda.is_available()
    details = [
        f"{r.package}: {'importable' if r.importable else 'MISSING'} "
        f"(for {r.needed_for})"
        for r in needs
    ]
    missing = [r for r in needs if not r.importable]
    if not missing:
        return Check(
            "", OK, ", ".join(r.package for r in needs) + " importable", details
        )
    blocking = [r for r in missing if r.blocks(gpu)]
    names = ", ".join(r.package for r in missing)
    if not blocking:
        return Check(
            "",
            WARN,
            f"{names} missing: not needed on this machine (no GPU), but on the "
            "GPU node that trains",
            details,
            fix=" ".join(describe(r) for r in missing),
        )
    return Check(
        "",
        FAIL,
        f"{names} missing: training would stop",
        details,
        fix=" ".join(describe(r) for r in blocking),
    )


def _settings(state: _State) -> Check:
    from pydantic import ValidationError

    from axolotl_sealong.core.config import describe_validation_error
    from axolotl_sealong.integrations.axolotl.plugin import label_settings

    try:
        state.label_cfg = label_settings(state.cfg)
    except ValidationError as err:
        raise _Stop(Check("", FAIL, describe_validation_error(err))) from None
    except ValueError as err:
        raise _Stop(Check("", FAIL, str(err))) from None
    c = state.label_cfg
    return Check(
        "",
        OK,
        f"N={c.num_samples}, T={c.temperature}, max_new_tokens {c.max_new_tokens}, "
        f"sampler {c.sampler}, embedder {c.embedder}",
        [f"prompts sized to max_model_len {c.max_model_len}, overlong: {c.overlong}"],
    )


# -- the questions ------------------------------------------------------------------


def _question_files(state: _State) -> str:
    from axolotl_sealong.integrations.axolotl.args import self_label_entries

    paths = [str(ds.get("path")) for ds in self_label_entries(state.raw)]
    return ", ".join(paths) or "(no self-label dataset)"


def _questions(state: _State) -> Check:
    from axolotl_sealong.core.pipeline import (
        fit_prompts,
        prompt_limits,
        questions_from_rows,
    )
    from axolotl_sealong.integrations.axolotl.recipe import read_questions

    files = _question_files(state)
    try:
        state.rows = read_questions(state.raw, base_dir=state.path.resolve().parent)
        state.questions = questions_from_rows(state.rows, state.label_cfg)
    except (ValueError, OSError) as err:
        raise _Stop(
            Check(
                "",
                FAIL,
                f"{files}: {err}",
                fix=f"fix the file or the recipe's datasets: entry ({files})",
            )
        ) from None
    cfg = state.label_cfg
    tokenizer, max_model_len = prompt_limits(cfg)
    budget = max_model_len - cfg.max_new_tokens
    kept, skipped = fit_prompts(state.questions, tokenizer, budget, cfg)
    state.kept = kept
    sizes = sorted(q.prompt_tokens for q in state.questions)
    cut = sum(q.truncated for q in kept)
    details = [
        f"{len(state.rows)} rows in {files}; {len(state.questions)} questions "
        f"(max_questions {cfg.max_questions or 'unset'})",
        "prompt tokens with the model's tokenizer: "
        + ", ".join(
            f"{name} {value:,}"
            for name, value in (
                ("min", sizes[0]),
                ("median", int(statistics.median(sizes))),
                ("p90", sizes[min(len(sizes) - 1, int(0.9 * len(sizes)))]),
                ("max", sizes[-1]),
            )
        ),
        f"limit {budget:,} (max_model_len {max_model_len:,} - max_new_tokens "
        f"{cfg.max_new_tokens:,}): {sum(s > budget for s in sizes)} over it; "
        f"{len(skipped)} skipped, {cut} cut in the middle (overlong: {cfg.overlong})",
    ]
    if not kept:
        return Check(
            "",
            FAIL,
            f"no question fits in {budget:,} prompt tokens",
            details,
            fix="raise sequence_len, lower sealong_max_new_tokens, or set "
            "sealong_overlong: truncate_middle",
        )
    status = WARN if skipped else OK
    return Check("", status, f"{len(kept)} of {len(state.questions)} to label", details)


def _done(state: _State) -> Check:
    from axolotl_sealong.core.pipeline import (
        DIAGNOSTICS_FILE,
        sample_store,
        served_model,
    )
    from axolotl_sealong.integrations.axolotl.plugin import labels_dir

    cfg = state.label_cfg
    labels = labels_dir(state.cfg, cfg, [q.key for q in state.questions])
    details = [f"labels folder {labels}"]
    labels_done = (labels / DIAGNOSTICS_FILE).is_file()
    if labels_done:
        details.append("labeled already: training reuses these rows, no sampling")
    try:
        state.served = served_model(cfg)
    except (ConnectionError, ValueError) as err:
        details.append(f"sample cache: cannot tell without the server ({err})")
        state.todo = [] if labels_done else list(state.kept)
        return Check("", WARN, "labels not done; cache unknown", details)
    store = sample_store(cfg, state.kept, state.served)
    done = store.load()
    todo = [q for q in state.kept if q.key not in done]
    state.todo = [] if labels_done else todo
    details.append(
        f"sample cache {store.dir}: {len(state.kept) - len(todo)} of "
        f"{len(state.kept)} questions sampled"
    )
    if labels_done:
        return Check("", OK, "labels done", details)
    return Check("", OK, f"{len(state.todo)} question(s) left to sample", details)


# -- the sampling environment ------------------------------------------------------


def _engine(state: _State) -> Check:
    from axolotl_sealong.sampling.factory import resolve_engine

    engine = resolve_engine(state.label_cfg.sampler)
    if engine == "vllm_server":
        return _vllm_server(state)
    if engine == "hf":
        return _hf(state)
    if engine == "openai":
        return _openai(state)
    if engine == "vllm":
        return _vllm_in_process(state)
    return Check("", SKIP, f"sampler {engine}: this engine has no environment check")


def _gpu_lines(gpus: Any) -> list[str]:
    if gpus is None:
        return ["nvidia-smi: not available"]
    lines = [
        f"nvidia-smi: driver {gpus.driver}; {len(gpus.gpus)} of {gpus.all_gpus} "
        "GPU(s) visible (CUDA_VISIBLE_DEVICES)"
    ]
    lines += [
        f"  GPU {g.index} {g.name}: {g.used_mib:,} of {g.total_mib:,} MiB used"
        for g in gpus.gpus
    ]
    if gpus.note:
        lines.append(gpus.note)
    return lines


def _vllm_server(state: _State) -> Check:
    import os

    from axolotl_sealong.common.models import resolve_model
    from axolotl_sealong.sampling.cuda_env import query_gpus
    from axolotl_sealong.sampling.options import VLLMOptions
    from axolotl_sealong.sampling.server_args import parse_server_args
    from axolotl_sealong.sampling.server_command import server_plan
    from axolotl_sealong.sampling.server_env import check_server_cuda, inspect_server

    cfg = state.label_cfg
    gpus = query_gpus(os.environ)
    details = _gpu_lines(gpus)
    try:
        _, _, env = inspect_server(cfg.vllm_server_python, lambda: gpus)
        build = f"CUDA {env.cuda_version}" if env.cuda_version else "CPU build"
        details.insert(
            0,
            f"server python {env.python}: {env.distribution} {env.vllm}, torch "
            f"{env.torch} ({build}), {env.gpus if env.cuda else 'no'} GPU(s) "
            "seen by its torch",
        )
        check_server_cuda(env, gpus)
        plan = server_plan(
            env,
            gpus,
            resolve_model(cfg.model),
            revision=cfg.model_revision,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            vllm=VLLMOptions.from_config(cfg),
            extra=parse_server_args(cfg.vllm_server_args),
        )
    except ValueError as err:
        return Check("", FAIL, str(err).split(":")[0], details, fix=str(err))
    details += [f"plan: {plan.summary()}", *plan.lines]
    details += [f"warning: {w}" for w in plan.warnings]
    state.on_gpu = env.cuda
    state.gpus_for_estimate = plan.used if env.cuda else 1
    status = WARN if plan.warnings else OK
    summary = f"vllm_server from {env.distribution} {env.vllm}: {plan.summary()}"
    return Check("", status, summary, details)


def _vllm_in_process(state: _State) -> Check:
    from axolotl_sealong.sampling.base import vllm_importable

    if not vllm_importable():
        return Check(
            "",
            FAIL,
            "sampler vllm, but vLLM does not import in this environment",
            fix="use sealong_sampler: vllm_server (vLLM in its own environment)",
        )
    import torch

    state.on_gpu = torch.cuda.is_available()
    state.gpus_for_estimate = torch.cuda.device_count() if state.on_gpu else 1
    return Check("", OK, "vLLM in this process (the plan is made when it starts)")


def _hf(state: _State) -> Check:
    import torch

    device = state.label_cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    state.on_gpu = device.startswith("cuda")
    state.gpus_for_estimate = 1
    if state.on_gpu and not torch.cuda.is_available():
        return Check("", FAIL, f"device {device!r}, but no GPU is visible")
    return Check("", OK, f"hf engine in this process on {device}")


def _openai(state: _State) -> Check:
    from axolotl_sealong.sampling.base import split_urls
    from axolotl_sealong.sampling.openai import served_model_name

    cfg = state.label_cfg
    try:
        # the name _done got from the server; asked again only if it did not
        name = (
            cfg.openai_model
            or state.served
            or served_model_name(cfg.openai_base_urls, cfg.openai_api_key, 10.0)
        )
    except (ConnectionError, ValueError) as err:
        return Check("", FAIL, f"{cfg.openai_base_urls}: {err}")
    state.gpus_for_estimate = len(split_urls(cfg.openai_base_urls))
    state.on_gpu = True
    return Check("", OK, f"servers at {cfg.openai_base_urls} serve {name!r}")


def _embedder(state: _State) -> Check:
    from axolotl_sealong.core.mbr import utility_needs_embeddings
    from axolotl_sealong.core.pipeline import probe_embedder

    cfg = state.label_cfg
    if not utility_needs_embeddings(cfg.utility):
        return Check("", OK, f"utility {cfg.utility} needs no embedder")
    t0 = time.perf_counter()
    try:
        embedder = probe_embedder(cfg)
    except (ValueError, OSError, RuntimeError) as err:
        return Check(
            "",
            FAIL,
            f"{cfg.embedder}: {err}",
            fix="point sealong_embedder at a working sentence-transformers "
            "model (docs/labeling.md, 'The embedder on a GPU')",
        )
    return Check(
        "",
        OK,
        f"{cfg.embedder} loads and embeds on the CPU in "
        f"{time.perf_counter() - t0:.1f} s",
        [
            f"window {embedder.max_tokens} tokens, long outputs: "
            f"{cfg.embedder_long_text}; remote code: "
            f"{'yes' if cfg.embedder_trust_remote_code else 'no'}"
        ],
    )


# -- the estimate ---------------------------------------------------------------------


def _estimate(state: _State, given: Assumptions) -> Check:
    cfg = state.label_cfg
    todo = state.todo
    if not todo:
        return Check("", OK, "nothing to sample")
    gpu = state.on_gpu
    prefill_tps = given.prefill_tps or (GPU_PREFILL_TPS if gpu else CPU_PREFILL_TPS)
    decode_tps = given.decode_tps or (GPU_DECODE_TPS if gpu else CPU_DECODE_TPS)
    output = min(given.output_tokens or OUTPUT_TOKENS, cfg.max_new_tokens)
    units = max(1, state.gpus_for_estimate)
    prefill = sum(q.prompt_tokens for q in todo)
    decode = len(todo) * cfg.num_samples * output
    worst = len(todo) * cfg.num_samples * cfg.max_new_tokens
    seconds = prefill / (prefill_tps * units) + decode / (decode_tps * units)
    worst_s = prefill / (prefill_tps * units) + worst / (decode_tps * units)
    unit = "GPU" if gpu else "process"
    details = [
        "time = P / (prefill rate x U) + D / (decode rate x U), U = "
        + (f"{units} GPU(s)" if gpu else f"{units} process(es)"),
        f"P = {prefill:,} prompt tokens of {len(todo)} question(s) to sample "
        "(each computed once for all its samples)",
        f"D = {len(todo)} x N {cfg.num_samples} x {output} new tokens = {decode:,}",
        f"assumed: prefill {prefill_tps:,.0f} and decode {decode_tps:,.0f} tokens/s "
        f"per {unit}, {output} new tokens per sample on average (override: "
        "--prefill-tps, --decode-tps, --output-tokens)",
        f"every sample at max_new_tokens {cfg.max_new_tokens}: "
        f"{_duration(worst_s)} ({worst:,} new tokens)",
    ]
    cost = f" ({seconds * units / 3600:.1f} GPU-hours)" if gpu else ""
    return Check(
        "",
        OK,
        f"about {_duration(seconds)}{cost} for {prefill + decode:,} tokens",
        details,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
