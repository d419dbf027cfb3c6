"""Questions -> N samples each -> embeddings -> MBR scores -> training rows.

The one pipeline behind ``sealong label`` and the Axolotl plugin. Inputs are
checked before any model loads; samples go through the append-only cache; the
cheap steps (embedding, scoring, selection) are redone from the cache each run.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from axolotl_sealong.common.models import cache_root
from axolotl_sealong.common.rows import read_rows as read_rows, write_jsonl
from axolotl_sealong.core.cache import (
    SampleStore,
    model_fingerprint,
    path_fingerprint,
    stable_hash,
)
from axolotl_sealong.core.config import LabelConfig
from axolotl_sealong.core.diagnostics import subem_diagnostics
from axolotl_sealong.core.mbr import (
    scores_from_similarity,
    select_pair,
    similarity_matrix,
    utility_needs_embeddings,
)
from axolotl_sealong.core.prompts import fit_prompt_counted
from axolotl_sealong.sampling.base import (
    Sampler,
    SampleRequest,
    SamplingParams,
    model_max_positions,
)
from axolotl_sealong.sampling.factory import sampler_from_config

LOG = logging.getLogger(__name__)

SFT_FILE = "sft.jsonl"
PREFERENCE_FILE = "preference.jsonl"
SCORED_FILE = "scored.jsonl"
DIAGNOSTICS_FILE = "diagnostics.json"


@dataclass
class Question:
    key: str
    index: int
    context: str
    question: str
    answers: list[str] | None
    user_message: str = ""
    truncated: bool = False
    prompt_tokens: int = 0  # as sent; for a skipped question, what did not fit


@dataclass
class LabelResult:
    out_dir: Path
    counts: dict[str, int]
    diagnostics: dict[str, Any]
    cache_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)


def _answers(value: Any) -> list[str] | None:
    """Gold answers as a list of strings (None when the row has none)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def _bad_answers(value: Any) -> bool:
    if value is None or isinstance(value, str):
        return False
    return not (
        isinstance(value, list | tuple) and all(isinstance(a, str) for a in value)
    )


def questions_from_rows(
    rows: Sequence[dict[str, Any]], cfg: LabelConfig
) -> list[Question]:
    """Check every row and build questions; errors name the field and the fix."""
    if not rows:
        raise ValueError("the data has no rows")
    fields = {"context": cfg.context_field, "question": cfg.question_field}
    for role, name in fields.items():
        missing = [i for i, r in enumerate(rows) if name not in r]
        if missing:
            raise ValueError(
                f"{role} field {name!r} is missing in {len(missing)} row(s) "
                f"(first: row {missing[0]}, which has keys {sorted(rows[missing[0]])}):"
                f" set `{role}_field` (sealong_{role}_field) to the right column"
            )
        bad = [
            i
            for i, r in enumerate(rows)
            if not isinstance(r[name], str) or not r[name].strip()
        ]
        if bad:
            raise ValueError(
                f"{role} field {name!r} is empty or not a string in {len(bad)} "
                f"row(s) (first: row {bad[0]}): fix or remove those rows"
            )
    answers = cfg.answers_field
    bad = [i for i, r in enumerate(rows) if _bad_answers(r.get(answers))]
    if bad:
        value = rows[bad[0]][answers]
        raise ValueError(
            f"answers field {answers!r} is {value!r} in row {bad[0]} ({len(bad)} "
            "row(s) like it): give a string or a list of strings (write numbers as "
            '"1955"), leave it out, or set answers_field (sealong_answers_field) '
            "to the column with the gold answers"
        )
    limit = cfg.max_questions or len(rows)
    out = []
    for i, row in enumerate(rows[:limit]):
        ctx, q = row[cfg.context_field], row[cfg.question_field]
        out.append(
            Question(
                key=stable_hash([ctx, q]),
                index=i,
                context=ctx,
                question=q,
                answers=_answers(row.get(cfg.answers_field)),
            )
        )
    return out


def fit_prompts(
    questions: list[Question], tokenizer: Any, budget: int, cfg: LabelConfig
) -> tuple[list[Question], list[Question]]:
    """Build prompts; skip (default) or middle-truncate those over ``budget``.

    Truncation is ``prompts.fit_prompt``, the rule the eval tasks use too; a
    skipped question's ``prompt_tokens`` is its whole prompt's, as counted there.
    """
    kept: list[Question] = []
    skipped: list[Question] = []
    truncate = cfg.overlong == "truncate_middle"
    for q in questions:
        fitted, whole = fit_prompt_counted(
            tokenizer, q.context, q.question, cfg.prompt_strategy, budget, truncate
        )
        if fitted is None:
            q.truncated = truncate
            q.prompt_tokens = whole
            skipped.append(q)
            continue
        q.truncated = fitted.context_tokens_cut > 0
        q.user_message = fitted.message
        q.prompt_tokens = fitted.tokens
        kept.append(q)
    return kept, skipped


def question_seed(seed: int, key: str) -> int:
    """Per-question seed: the same samples whether a run resumes or not."""
    return int(stable_hash([seed, key], 8), 16) % (2**31)


def served_model(cfg: LabelConfig, sampler: Sampler | None = None) -> str | None:
    """With the openai engine, the server's name for the weights; else None.

    Part of both cache keys: the local ``model`` only supplies the tokenizer
    there, so the served name is what tells round 1's weights from round 2's.
    """
    if cfg.sampler != "openai":
        return None
    if sampler is not None and getattr(sampler, "served_model", None):
        return str(sampler.served_model)  # type: ignore[attr-defined]
    if cfg.openai_model:
        return cfg.openai_model
    from axolotl_sealong.sampling.openai import served_model_name

    assert cfg.openai_base_urls  # LabelConfig requires them for sampler openai
    return served_model_name(
        cfg.openai_base_urls, cfg.openai_api_key, cfg.openai_timeout
    )


def sample_key_parts(
    cfg: LabelConfig, questions: list[Question], served: str | None = None
) -> dict[str, Any]:
    """What names a sample cache folder (see ``axolotl_sealong.core.cache``).

    ``questions`` carry their prompts as sent (``fit_prompts`` ran), so the
    prompt strategy, columns, overlong policy and effective max_model_len are
    covered by the messages themselves.
    """
    return {
        "model": model_fingerprint(cfg.model, cfg.model_revision),
        "adapter": path_fingerprint(cfg.adapter),
        "served_model": served,
        "openai_api": cfg.openai_api if cfg.sampler == "openai" else None,
        "n": cfg.num_samples,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.seed,
        "prompts": stable_hash([[q.key, q.user_message] for q in questions]),
        "num_questions": len(questions),
    }


def sample_store(
    cfg: LabelConfig, questions: list[Question], served: str | None = None
) -> SampleStore:
    """The sample cache folder of these questions: under ``cache_dir``
    (default ``<cache_root>/samples``), named by ``sample_key_parts``."""
    root = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "samples"
    return SampleStore(root, sample_key_parts(cfg, questions, served))


def _turns(user: str, assistant: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]


def _open_sampler(cfg: LabelConfig, out_dir: Path | None = None) -> Sampler:
    return sampler_from_config(cfg, log_dir=out_dir)


def prompt_limits(cfg: LabelConfig) -> tuple[Any, int]:
    """Tokenizer and context limit, without loading the weights.

    Enough to size prompts and decide what the cache already has, so a fully
    cached rerun never loads the sampling model.
    """
    from transformers import AutoTokenizer

    from axolotl_sealong.common.models import resolve_model

    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.model_revision)
    limit = model_max_positions(cfg.model, cfg.model_revision)
    return tokenizer, int(cfg.max_model_len or limit or 4096)


def _fit_or_fail(
    questions: list[Question],
    tokenizer: Any,
    max_model_len: int,
    cfg: LabelConfig,
    counts: Counter[str],
    allow_empty: bool = False,
) -> list[Question]:
    budget = max_model_len - cfg.max_new_tokens
    kept, skipped = fit_prompts(questions, tokenizer, budget, cfg)
    counts["skipped_overlong"] = len(skipped)
    counts["truncated_middle"] = sum(q.truncated for q in kept)
    if skipped:
        LOG.warning(
            "skipped %d question(s) whose prompt exceeds %d tokens (max_model_len %d "
            "- max_new_tokens %d); set overlong: truncate_middle to keep them",
            len(skipped),
            budget,
            max_model_len,
            cfg.max_new_tokens,
        )
    if not kept and not allow_empty:
        raise ValueError(
            f"no question fits in {budget} prompt tokens: raise max_model_len, lower "
            "max_new_tokens, use shorter contexts, or set overlong: truncate_middle"
        )
    return kept


def _sample_missing(
    cfg: LabelConfig,
    kept: list[Question],
    sampler: Sampler | None,
    counts: Counter[str],
    progress: bool,
    served: str | None = None,
    out_dir: Path | None = None,
    before_sampling: Callable[[], None] | None = None,
) -> tuple[SampleStore, dict[str, list[str]]]:
    """Reuse cached questions, sample the rest, append each as it finishes.

    The sampling model is loaded (and freed) here, only when something is
    missing from the cache; a sampler passed in by the caller is left open.
    ``before_sampling`` runs first then (the embedder check: a broken
    embedder must fail before hours of sampling, not after). A managed
    server (``vllm_server``) writes its log into ``out_dir``.
    """
    from tqdm.auto import tqdm

    store = sample_store(cfg, kept, served)
    done = store.load()
    todo = [q for q in kept if q.key not in done]
    counts["cache_hits"] = len(kept) - len(todo)
    counts["sampled"] = len(todo)
    LOG.info(
        "%d question(s) to label: %d from cache %s, %d to sample (N=%d)",
        len(kept),
        counts["cache_hits"],
        store.dir,
        len(todo),
        cfg.num_samples,
    )
    if not todo:
        return store, done
    if before_sampling is not None:
        before_sampling()
    store.open_for_append()
    params = SamplingParams(
        n=cfg.num_samples,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    requests = [
        SampleRequest(q.key, q.user_message, question_seed(cfg.seed, q.key))
        for q in todo
    ]
    engine = sampler or _open_sampler(cfg, out_dir)
    bar = tqdm(total=len(requests), desc="sampling", unit="q", disable=not progress)
    try:
        for req, samples in engine.sample(requests, params):
            store.append(req.key, samples)
            done[req.key] = samples
            bar.update(1)
    except BaseException:
        bar.close()
        if sampler is None:
            _close_quietly(engine)  # the sampling error is the one to report
        raise
    bar.close()
    if sampler is None:
        engine.close()  # may raise (a server's GPU memory not released)
    return store, done


def _close_quietly(engine: Sampler) -> None:
    try:
        engine.close()
    except Exception as err:  # noqa: BLE001 - never hide the original error
        LOG.warning("closing the %s engine after an error failed: %s", engine.name, err)


def probe_embedder(cfg: LabelConfig) -> Any:
    """Load the embedder on the CPU and embed one sentence: it works, or the
    run stops now, before any sampling. Returns it, to be reused."""
    from axolotl_sealong.embedding.embedder import Embedder

    t0 = time.perf_counter()
    try:
        embedder = Embedder(
            cfg.embedder,
            device="cpu",
            long_text=cfg.embedder_long_text,
            batch_size=cfg.embedder_batch_size,
            trust_remote_code=cfg.embedder_trust_remote_code,
        )
        vector = embedder.encode(["The answer is Paris."])
    except (ValueError, FileNotFoundError):
        raise  # our own messages name the setting already
    except Exception as err:  # noqa: BLE001 - any failure of a model's own code
        raise RuntimeError(
            f"embedder (sealong_embedder / --embedder) {cfg.embedder!r} failed to "
            f"load or embed a sentence on the CPU: {type(err).__name__}: {err}. "
            "Nothing was sampled. Fix the embedder (or choose another) and rerun"
        ) from err
    LOG.info(
        "embedder %s loads and embeds (dimension %d, window %d tokens) in %.1f s; "
        "checked before sampling",
        cfg.embedder,
        vector.shape[1],
        embedder.max_tokens,
        time.perf_counter() - t0,
    )
    return embedder


def build_rows(
    cfg: LabelConfig,
    kept: list[Question],
    done: dict[str, list[str]],
    embeddings: np.ndarray | None,
    counts: Counter[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Score each question's samples and turn the picks into SFT/preference rows.

    Blank samples (empty or whitespace) are left out of MBR: they agree with
    each other, so they could outvote real answers and win. They neither vote,
    nor are chosen or rejected; their score is recorded as None. A question
    with fewer than two non-blank samples gets no row (``no_pair_blank_samples``).
    """
    sft, prefs, scored = [], [], []
    offset = 0
    for q in kept:
        samples = done[q.key]
        n = len(samples)
        emb = None if embeddings is None else embeddings[offset : offset + n]
        offset += n
        rng = np.random.default_rng(question_seed(cfg.seed, q.key))
        live = [i for i, s in enumerate(samples) if s.strip()]
        counts["blank_samples"] += n - len(live)
        counts["questions_with_blank_samples"] += n > len(live)
        scores: list[float | None] = [None] * n
        chosen: int | None = None
        rejected: int | None = None
        gap = 0.0
        if len(live) < 2:
            skip: str | None = "blank_samples"
        else:
            texts = [samples[i] for i in live]
            sim = similarity_matrix(
                cfg.utility, texts, None if emb is None else emb[live]
            )
            live_scores = scores_from_similarity(sim)
            sel = select_pair(live_scores, texts, cfg.rejected, cfg.margin, rng)
            for j, i in enumerate(live):
                scores[i] = round(float(live_scores[j]), 6)
            chosen, skip, gap = live[sel.chosen], sel.skip_reason, sel.gap
            rejected = None if sel.rejected is None else live[sel.rejected]
        if skip:
            counts[f"no_pair_{skip}"] += 1
        elif chosen is not None and rejected is not None:
            prefs.append(
                {
                    "chosen": _turns(q.user_message, samples[chosen]),
                    "rejected": _turns(q.user_message, samples[rejected]),
                }
            )
        if chosen is not None:
            sft.append({"messages": _turns(q.user_message, samples[chosen])})
        scored.append(
            {
                "key": q.key,
                "index": q.index,
                "question": q.question,
                "answers": q.answers,
                "samples": samples,
                "scores": scores,
                "chosen": chosen,
                "rejected": None if skip else rejected,
                "gap": round(gap, 6),
                "skip_reason": skip,
                "blank_samples": n - len(live),
                "truncated": q.truncated,
                "random_pick": int(rng.integers(n)),
            }
        )
    counts["pairs"] = len(prefs)
    counts["sft_rows"] = len(sft)
    if counts["blank_samples"]:
        LOG.warning(
            "left %d blank sample(s) of %d question(s) out of MBR (never chosen, "
            "rejected or voting); %d question(s) had fewer than 2 non-blank "
            "samples and got no row",
            counts["blank_samples"],
            counts["questions_with_blank_samples"],
            counts["no_pair_blank_samples"],
        )
    return sft, prefs, scored


def row_sources(scored: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """The scored row behind each SFT row and each preference row, in file order.

    ``build_rows`` writes an SFT row when a sample was chosen (never a blank
    one) and a pair when the question was not skipped; this reads the same
    rule back from ``scored.jsonl`` (used to put the shards of a multi-rank run
    in order).
    """
    sft = [
        i
        for i, r in enumerate(scored)
        if r["chosen"] is not None and r["samples"][r["chosen"]].strip()
    ]
    prefs = [i for i, r in enumerate(scored) if r["skip_reason"] is None]
    return sft, prefs


def check_inputs(
    cfg: LabelConfig, out_dir: Path, *, sampler_given: bool, need_embedder: bool
) -> None:
    """Every name, folder and engine a run needs, checked before any model loads.

    Each failure names the setting, the value and the fix: a model, adapter or
    embedder that is no folder (or no hub id, or not cached offline), an
    engine that is not installed, a GPU that is not there, an output or cache
    folder that is a file.
    """
    from axolotl_sealong.common.models import check_model_source
    from axolotl_sealong.embedding.embedder import check_embedder
    from axolotl_sealong.sampling.base import vllm_importable
    from axolotl_sealong.sampling.factory import resolve_engine

    for folder, setting in (
        (out_dir, "the output folder (--out)"),
        (Path(cfg.cache_dir) if cfg.cache_dir else None, "cache_dir (--cache-dir)"),
    ):
        if folder is not None and folder.exists() and not folder.is_dir():
            raise ValueError(f"{setting} {str(folder)!r} is a file: give a folder")
    if need_embedder:
        check_embedder(cfg.embedder, cfg.embedder_trust_remote_code)
    if sampler_given:
        return
    check_model_source(
        cfg.model,
        "model (sealong_model / --model)",
        needs=("config.json", "tokenizer_config.json"),
        revision=cfg.model_revision,
    )
    if cfg.adapter:
        check_model_source(
            cfg.adapter,
            "adapter (sealong_adapter / --adapter)",
            needs=("adapter_config.json",),
            what="a LoRA adapter folder (the output_dir of a training run)",
        )
    engine = resolve_engine(cfg.sampler)
    if engine == "vllm" and not vllm_importable():
        raise ValueError(
            "sampler vllm: vLLM is not installed in this environment (it cannot "
            "share one with axolotl 0.19): run the sealong of a venv built by "
            "scripts/setup_vllm.sh, or set sealong_sampler / --sampler to hf or "
            "openai"
        )
    if engine == "hf" and (cfg.device or "").startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                f"device {cfg.device!r}: no CUDA GPU is visible here: unset "
                "sealong_device / --device (the CPU is used) or run on a GPU"
            )


def label(
    cfg: LabelConfig,
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    sampler: Sampler | None = None,
    embedder: Any = None,
    progress: bool = True,
    allow_empty: bool = False,
) -> LabelResult:
    """Run the whole pipeline and write rows + diagnostics to ``out_dir``.

    Everything that can be checked (settings, data fields, embedder path) is
    checked before the sampling model loads. ``allow_empty`` (one rank's shard
    of a multi-rank run) writes empty files, loading no model, when there are
    no rows or none fits, instead of stopping with an error.
    """
    from axolotl_sealong.embedding.embedder import Embedder

    clock = time.perf_counter
    t0 = clock()
    seconds: dict[str, float] = {}
    questions = questions_from_rows(rows, cfg) if rows or not allow_empty else []
    out = Path(out_dir)
    check_inputs(
        cfg,
        out,
        sampler_given=sampler is not None,
        need_embedder=embedder is None and utility_needs_embeddings(cfg.utility),
    )
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter(questions=len(questions))

    if sampler is not None:
        tokenizer, max_model_len = sampler.tokenizer, sampler.max_model_len
    else:
        tokenizer, max_model_len = prompt_limits(cfg)
    kept = _fit_or_fail(questions, tokenizer, max_model_len, cfg, counts, allow_empty)
    t1 = clock()
    served = served_model(cfg, sampler)
    probed: list[Any] = []
    needs_embeddings = utility_needs_embeddings(cfg.utility) and embedder is None
    store, done = _sample_missing(
        cfg,
        kept,
        sampler,
        counts,
        progress,
        served,
        out,
        before_sampling=(lambda: probed.append(probe_embedder(cfg)))
        if needs_embeddings
        else None,
    )
    seconds["sample"] = clock() - t1

    t2 = clock()
    embeddings = None
    if utility_needs_embeddings(cfg.utility) and kept:
        if embedder is None and probed:
            embedder = probed[0].to_default_device()  # the GPU is free again
        embedder = embedder or Embedder(
            cfg.embedder,
            long_text=cfg.embedder_long_text,
            batch_size=cfg.embedder_batch_size,
            trust_remote_code=cfg.embedder_trust_remote_code,
        )
        texts = [s for q in kept for s in done[q.key]]
        embeddings = embedder.encode(texts, show_progress=progress)
    seconds["embed"] = clock() - t2

    t3 = clock()
    sft, prefs, scored = build_rows(cfg, kept, done, embeddings, counts)
    seconds["score"] = clock() - t3
    no_pair = {k: v for k, v in counts.items() if k.startswith("no_pair_")}
    if no_pair:
        LOG.warning("questions without a preference pair: %s", no_pair)

    write_jsonl(out / SFT_FILE, sft)
    write_jsonl(out / PREFERENCE_FILE, prefs)
    write_jsonl(out / SCORED_FILE, scored)
    seconds["total"] = clock() - t0
    diagnostics = {
        "counts": dict(counts),
        "subem": subem_diagnostics(scored),
        "cache_dir": str(store.dir),
        "served_model": served,  # sampler openai: the weights' name on the server
        "settings": cfg.public_settings(),  # secrets as "***"
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    (out / DIAGNOSTICS_FILE).write_text(json.dumps(diagnostics, indent=2))
    LOG.info(
        "wrote %d SFT rows and %d preference pairs to %s", len(sft), len(prefs), out
    )
    return LabelResult(out, dict(counts), diagnostics, store.dir, seconds)
