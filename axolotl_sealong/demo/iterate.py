"""``sealong iterate``: SEALONG round after round on any recipe.

Round ``r`` labels questions with the model of round ``r-1`` (``axolotl
preprocess``: the plugin samples N outputs per question and MBR-labels them),
trains (``axolotl train``), folds a LoRA adapter into a plain model folder
(``merge_r``) and evaluates with the lm-eval tasks the user names (``eval_r``;
``eval_0`` is the model before training). Every finished stage is recorded in
``OUT/state.json``: a killed run resumes at the first unfinished stage, and
``--rounds 3`` after a 2-round run only runs round 3.

The paper stops after one round. Repeating it on the same questions undid the
first round on the CPU demo (README): the round-1 model had learned its own
answers to those questions, its samples agreed (56 of 128 questions gave 8
identical samples), and the pairs left were near-random. The round policies
(:class:`RoundPolicy`) are what published iterative self-training does about
it: fresh questions each round, a label-free diversity guard on the sampling
temperature, a pair filter by MBR margin, training from the base model on the
union of all rounds' pairs (optionally bounded to the largest-gap rows) instead
of continuing from the last round, and an early stop when the guard at its cap
still finds the samples agreeing too much.
Each round logs label-free signals (how much the samples agree) next to the
gold-answer diagnostics (when the questions carry answers).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from axolotl_sealong.demo import report as demo_report

LOG = logging.getLogger(__name__)

STATE_FILE = "state.json"
PLUGIN = "axolotl_sealong.SeaLongPlugin"
# The demo's eval task; older demo runs stored its scores flat, under no name.
DEMO_TASK = "sealong_synth"
TRAIN_FROM = ("previous", "base")
SAMPLE_WITH = ("merged", "adapter")
MERGE_DTYPES = ("auto", "float32", "bfloat16", "float16")
LAUNCHERS = ("auto", "python", "accelerate")
ADAPTERS = ("lora", "qlora")

# What each policy does, for both CLIs (sealong iterate, sealong demo) and docs.
POLICY_HELP: dict[str, str] = {
    "questions_per_round": "fresh questions: round r labels rows [(r-1)K, rK) of the "
    "question pool, so no question is labeled twice (Iterative RPO, ScPO); 0: every "
    "round labels the recipe's questions again (the paper's single round, repeated)",
    "train_from": "previous: round r trains the model of round r-1 on its own pairs; "
    "base: round r trains the base model on the union of the pairs of rounds 1..r "
    "(ReST-EM)",
    "sample_with": "how round r samples with the model of round r-1: merged (the "
    "LoRA folded into a plain model folder) or adapter (base + adapter, nothing "
    "merged; with train_from previous the next round keeps training that adapter)",
    "guard_identical_share": "diversity guard, from round 2: when more than this "
    "share of the probe's questions gave N identical samples, sample the round at a "
    "higher temperature (0: off)",
    "guard_mean_similarity": "diversity guard, from round 2: when the probe's mean "
    "pairwise similarity of samples (the mean MBR score) is above this, sample the "
    "round at a higher temperature (0: off)",
    "guard_probe_questions": "diversity guard: questions (the round's first) sampled "
    "to measure the agreement before the round is labeled",
    "guard_temperature_step": "diversity guard: temperature added per step",
    "guard_max_temperature": "diversity guard: the highest temperature it may set",
    "margin_quantile": "pair filter, from round 2 (round 1 is the paper's method, "
    "every pair): drop the pairs whose best-worst MBR score gap is below this "
    "quantile of that round's gaps (0: off; 0.5 keeps the more decided half)",
    "union_max_rows": "bounded union, with train_from base: round r trains on its "
    "own pairs plus the older rounds' pairs with the largest MBR gaps, up to this "
    "many rows in all (the round's own pairs always train; 0: the whole union, "
    "which grows every round and with it the training time)",
    "stop_at_guard_cap": "early stop: when the diversity guard is at its cap and the "
    "probe still trips, the iteration ends before that round labels or trains; the "
    "last trained round's model is the result (Meta-Rewarding, SRT: self-training "
    "collapses without early stopping)",
}


@dataclass(frozen=True)
class RoundPolicy:
    """How rounds differ from a plain repeat of round 1; each field is a setting."""

    questions_per_round: int = 0
    train_from: str = "previous"
    sample_with: str = "merged"
    guard_identical_share: float = 0.0
    guard_mean_similarity: float = 0.0
    guard_probe_questions: int = 32
    guard_temperature_step: float = 0.2
    guard_max_temperature: float = 1.0
    margin_quantile: float = 0.0
    union_max_rows: int = 0
    stop_at_guard_cap: bool = False

    @property
    def guard(self) -> bool:
        return self.guard_identical_share > 0 or self.guard_mean_similarity > 0

    def check(self) -> None:
        """Bad values fail here, before any model loads: field, value and the fix."""
        _one_of("train_from", self.train_from, TRAIN_FROM)
        _one_of("sample_with", self.sample_with, SAMPLE_WITH)
        if self.questions_per_round < 0:
            raise ValueError(
                f"--questions-per-round {self.questions_per_round}: must be >= 0 "
                "(K fresh questions per round, or 0 to label the same questions "
                "every round)"
            )
        for name in ("guard_identical_share", "guard_mean_similarity"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(
                    f"--{_flag(name)} {value}: must be in [0, 1) (0 turns it off; "
                    "e.g. 0.25)"
                )
        if not 0 <= self.margin_quantile < 1:
            raise ValueError(
                f"--margin-quantile {self.margin_quantile}: must be in [0, 1) (0 "
                "keeps every pair; 0.5 drops the half with the smaller MBR margin)"
            )
        self._check_union()
        if self.stop_at_guard_cap and not self.guard:
            raise ValueError(
                "--stop-at-guard-cap needs the diversity guard: set "
                "--guard-identical-share (e.g. 0.2) or --guard-mean-similarity"
            )
        if self.guard:
            self._check_guard()

    def _check_union(self) -> None:
        if self.union_max_rows < 0:
            raise ValueError(
                f"--union-max-rows {self.union_max_rows}: must be >= 0 (0: the "
                "whole union; e.g. 128)"
            )
        if self.union_max_rows and self.train_from != "base":
            raise ValueError(
                f"--union-max-rows {self.union_max_rows} bounds the union of the "
                f"rounds' pairs, which only --train-from base trains on (it is "
                f"{self.train_from!r}): add --train-from base or drop the flag"
            )

    def _check_guard(self) -> None:
        if self.guard_probe_questions < 4:
            raise ValueError(
                f"--guard-probe-questions {self.guard_probe_questions}: must be >= 4 "
                "(the guard measures a share of questions; e.g. 32)"
            )
        if self.guard_temperature_step <= 0:
            raise ValueError(
                f"--guard-temperature-step {self.guard_temperature_step}: must be > 0 "
                "(e.g. 0.2)"
            )
        if self.guard_max_temperature <= 0:
            raise ValueError(
                f"--guard-max-temperature {self.guard_max_temperature}: must be > 0 "
                "(e.g. 1.0)"
            )

    def trips(self, signals: dict[str, Any]) -> list[str]:
        """The guard's reasons to raise the temperature (empty: keep it)."""
        reasons = []
        share, sim = signals["identical_share"], signals["mean_similarity"]
        if self.guard_identical_share and share > self.guard_identical_share:
            reasons.append(
                f"identical share {share:.3f} > {self.guard_identical_share}"
            )
        if self.guard_mean_similarity and sim and sim > self.guard_mean_similarity:
            reasons.append(f"mean similarity {sim:.4f} > {self.guard_mean_similarity}")
        return reasons


@dataclass(frozen=True)
class EvalSettings:
    """lm-eval after every round (nothing when ``tasks`` is empty)."""

    tasks: tuple[str, ...] = ()
    model_args: str = ""
    args: tuple[str, ...] = ()
    metric: str = "sub_em"


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _one_of(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"--{_flag(name)} {value!r}: use one of {', '.join(valid)}")


# --------------------------------------------------------------------------- #
# Stage bookkeeping
# --------------------------------------------------------------------------- #
class Stages:
    """``OUT/state.json``: finished stages with their seconds and results.

    ``legacy`` holds the value a setting had before it existed: a run recorded
    without the key resumes when the wanted value equals it (same behaviour).
    """

    def __init__(
        self,
        out: Path,
        settings: Any,
        fresh: bool,
        legacy: dict[str, Any] | None = None,
    ) -> None:
        self.path = out / STATE_FILE
        wanted = (
            dataclasses.asdict(settings)
            if dataclasses.is_dataclass(settings) and not isinstance(settings, type)
            else dict(settings)
        )
        # as state.json holds them (tuples become lists), so a resume compares
        # like with like
        wanted = json.loads(json.dumps(wanted))
        if self.path.exists() and not fresh:
            state = json.loads(self.path.read_text())
            old = {**(legacy or {}), **state.get("settings", {})}
            changed = {k: (old.get(k), v) for k, v in wanted.items() if old.get(k) != v}
            if changed:
                names = ", ".join(
                    f"{k} ({a!r} -> {b!r})" for k, (a, b) in changed.items()
                )
                raise ValueError(
                    f"{out} holds a run with other settings: {names}. Use another "
                    "--out, the recorded settings, or --fresh to start over"
                )
            state["settings"] = wanted
            self.state = state
            done = list(state["stages"])
            if done:
                LOG.info("resuming %s: finished stages %s", out, ", ".join(done))
        else:
            self.state = {"settings": wanted, "stages": {}}
        out.mkdir(parents=True, exist_ok=True)
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.path)

    def done(self, name: str) -> dict[str, Any] | None:
        rec = self.state["stages"].get(name)
        return None if rec is None else dict(rec["result"])

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        done = self.state["stages"].get(name)
        if done is not None:
            LOG.info(
                "stage %s: done in an earlier run (%.0f s), skipped",
                name,
                done["seconds"],
            )
            return dict(done["result"])
        LOG.info("stage %s: starting", name)
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        self.state["stages"][name] = {"seconds": round(seconds, 1), "result": result}
        self._save()
        LOG.info("stage %s: finished in %.0f s", name, seconds)
        return result

    def adopt(self, other: Path, names: Sequence[str]) -> None:
        """Take finished stages of another run (``--from-run``), marked as such."""
        state = json.loads((other / STATE_FILE).read_text())["stages"]
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(
                f"--from-run {other} has not finished stage(s) {', '.join(missing)}"
                ": finish that run first, or start from an earlier round"
            )
        for name in names:
            if name not in self.state["stages"]:
                self.state["stages"][name] = {**state[name], "from_run": str(other)}
        self._save()

    def seconds(self) -> dict[str, float]:
        return {
            k: v["seconds"]
            for k, v in self.state["stages"].items()
            if "from_run" not in v
        }


# --------------------------------------------------------------------------- #
# Subprocesses: the commands a user would type
# --------------------------------------------------------------------------- #
def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_logged(cmd: list[str], log: Path, stage: str, resume_hint: str) -> None:
    """Run ``cmd``; its output (progress bars too) goes to the terminal and ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    LOG.info("stage %s: %s", stage, shlex.join(cmd))
    with log.open("wb") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n".encode())
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=run_env()
        )
        assert proc.stdout is not None
        while (
            chunk := proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else b""
        ):
            fh.write(chunk)
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
        code = proc.wait()
    if code:
        raise RuntimeError(
            f"stage {stage} failed (exit {code}): {shlex.join(cmd)}; its output is in "
            f"{log}. Finished stages are kept: rerun {resume_hint} to resume"
        )


def axolotl_cmd(sub: str, config: Path, launcher: str = "python") -> list[str]:
    cmd = [sys.executable, "-m", "axolotl.cli.main", sub, str(config)]
    if sub != "train" or launcher == "accelerate":
        return cmd
    if launcher == "auto":
        import torch

        if torch.cuda.is_available():
            return cmd
    # one process on a CPU (accelerate would only add start-up time)
    return [*cmd, "--launcher", "python"]


def lm_eval_cmd(
    model: Path, adapter: Path | None, out: Path, ev: EvalSettings
) -> list[str]:
    """``python -m lm_eval`` on a model folder (plus a LoRA adapter through peft=)."""
    from axolotl_sealong.integrations.lm_eval.discovery import lm_eval_argv

    model_args = f"pretrained={model}"
    if adapter is not None:
        model_args += f",peft={adapter}"
    if ev.model_args:
        model_args += f",{ev.model_args}"
    args = [
        "--model",
        "hf",
        "--model_args",
        model_args,
        "--tasks",
        ",".join(ev.tasks),
        *ev.args,
        "--log_samples",
        "--output_path",
        str(out),
    ]
    return [sys.executable, "-m", "lm_eval", *lm_eval_argv(args)]


def read_eval(out: Path, tasks: Sequence[str], metric: str) -> dict[str, Any]:
    """Per-question scores from lm-eval's ``--log_samples`` files, per task.

    A group (e.g. ``longbench_sealong``) writes one file per sub-task; each is
    reported on its own. Rows are ordered by ``doc_id`` so runs pair up.
    """
    from axolotl_sealong.core.pipeline import read_rows

    files = sorted(glob.glob(str(out / "**" / "samples_*.jsonl"), recursive=True))
    latest: dict[str, str] = {}
    for path in files:  # samples_<task>_<timestamp>.jsonl; the newest wins
        task = Path(path).name[len("samples_") :].rsplit("_", 1)[0]
        latest[task] = path
    if not latest:
        raise RuntimeError(
            f"lm-eval wrote no samples_*.jsonl under {out} (tasks {', '.join(tasks)})"
        )
    result: dict[str, Any] = {}
    for task, path in sorted(latest.items()):
        rows = sorted(read_rows(path), key=lambda r: r["doc_id"])
        if rows and metric not in rows[0]:
            raise RuntimeError(
                f"{path} has no per-question {metric!r}: its metrics are "
                f"{sorted(k for k in rows[0] if not k.startswith(('doc', 'arg')))}; "
                "pass --eval-metric with one of them"
            )
        result[task] = {
            "doc_ids": [r["doc_id"] for r in rows],
            "scores": [float(r[metric]) for r in rows],
            "output_tokens": [float(r.get("output_tokens", 0.0)) for r in rows],
            "samples_file": path,
        }
    return result


def eval_tasks(record: dict[str, Any]) -> dict[str, Any]:
    """An eval stage's per-task scores (older demo runs stored one task flat)."""
    if "tasks" in record:
        return dict(record["tasks"])
    return {
        DEMO_TASK: {
            "doc_ids": record["doc_ids"],
            "scores": record["sub_em"],
            "output_tokens": record["output_tokens"],
            "samples_file": record["samples_file"],
        }
    }


def merge_adapter(
    base: Path, adapter: Path, dest: Path, dtype: str = "auto"
) -> dict[str, Any]:
    """Fold the LoRA into the weights: the next round samples from a plain folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter / "adapter_config.json").is_file():
        raise RuntimeError(f"no LoRA adapter in {adapter}: did axolotl train finish?")
    tmp = dest.with_name(dest.name + ".partial")
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    os.replace(tmp, dest)
    return {"model": str(dest)}


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU core(s), {gpu}, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


# --------------------------------------------------------------------------- #
# What a labeling run says
# --------------------------------------------------------------------------- #
def labeled_dirs(round_dir: Path) -> list[Path]:
    found = glob.glob(
        str(round_dir / "prepared" / "sealong" / "*" / "diagnostics.json")
    )
    return sorted((Path(p).parent for p in found), key=lambda p: p.stat().st_mtime)


def labeled_dir(round_dir: Path, before: Sequence[Path] = ()) -> Path:
    """The labels folder this round's last axolotl call made (or reused)."""
    found = [p for p in labeled_dirs(round_dir) if p not in before] or labeled_dirs(
        round_dir
    )[-1:]
    if not found:
        raise RuntimeError(
            f"no labeled folder under {round_dir / 'prepared' / 'sealong'}"
        )
    return found[-1]


def label_summary(folder: Path, tokenizer: Any) -> dict[str, Any]:
    """Diagnostics, signals, pair count, score distributions and lengths."""
    from axolotl_sealong.core.diagnostics import live_scores
    from axolotl_sealong.core.pipeline import read_rows

    diag = json.loads((folder / "diagnostics.json").read_text())
    scored = read_rows(folder / "scored.jsonl")
    chosen: list[float] = []
    rejected: list[float] = []
    every: list[float] = []
    len_chosen: list[int] = []
    len_rejected: list[int] = []
    len_all: list[int] = []
    for row in scored:
        scores, samples = row.get("scores") or [], row["samples"]
        lengths = [
            len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in samples
        ]
        every += live_scores(row)
        len_all += lengths
        if row.get("rejected") is not None:
            chosen.append(scores[row["chosen"]])
            rejected.append(scores[row["rejected"]])
            len_chosen.append(lengths[row["chosen"]])
            len_rejected.append(lengths[row["rejected"]])
    return {
        "folder": str(folder),
        "diagnostics": diag["subem"],
        **signals_of(folder),
        "pick_by_n": pick_by_n(scored, diag["settings"]),
        "counts": diag["counts"],
        "pairs": len(chosen),
        "score_distribution": {"all": every, "chosen": chosen, "rejected": rejected},
        "mean_margin": round(
            demo_report.mean([c - r for c, r in zip(chosen, rejected, strict=True)]), 4
        ),
        "lengths": {
            "all": round(demo_report.mean(len_all), 1),
            "chosen": round(demo_report.mean(len_chosen), 1),
            "rejected": round(demo_report.mean(len_rejected), 1),
        },
        "label_seconds": diag.get("seconds", {}),
    }


def log_signals(r: int, summary: dict[str, Any]) -> None:
    """One line per round: the label-free signals, then the gold diagnostics."""
    sig, gold = summary["signals"], summary["diagnostics"]
    LOG.info(
        "round %d labels: identical share %s, mean similarity %s, distinct samples "
        "%s, pairs %s, gap p50 %s%s",
        r,
        sig.get("identical_share"),
        sig.get("mean_similarity"),
        sig.get("distinct_samples"),
        sig.get("pairs"),
        (sig.get("gap") or {}).get("p50"),
        (
            f"; gold: MBR pick {gold['mbr_pick']} vs random sample "
            f"{gold['random_sample']}, chosen/rejected right {gold['chosen']}/"
            f"{gold['rejected']}"
            if gold.get("questions_with_answers")
            else ""
        ),
    )


def signals_of(folder: Path) -> dict[str, Any]:
    from axolotl_sealong.core.diagnostics import label_free_signals, pairs_by_gap
    from axolotl_sealong.core.pipeline import read_rows

    scored = read_rows(folder / "scored.jsonl")
    return {"signals": label_free_signals(scored), "pairs_by_gap": pairs_by_gap(scored)}


def pick_by_n(scored: list[dict[str, Any]], settings: dict[str, Any]) -> list[Any]:
    """MBR pick accuracy for N = 4, 8, ... up to the N sampled (same embedder)."""
    import numpy as np

    from axolotl_sealong.common.models import resolve_model
    from axolotl_sealong.core.diagnostics import pick_accuracy_by_n
    from axolotl_sealong.core.mbr import cosine_matrix
    from axolotl_sealong.embedding.embedder import Embedder

    if not scored or settings.get("utility", "embedding") != "embedding":
        return []
    if not any(row.get("answers") for row in scored):
        return []
    embedder = Embedder(
        resolve_model(settings["embedder"]),
        long_text=settings["embedder_long_text"],
        trust_remote_code=bool(settings.get("embedder_trust_remote_code")),
    )
    texts = [t for row in scored for t in row["samples"]]
    emb = np.asarray(embedder.encode(texts, show_progress=False))
    sims, start = [], 0
    for row in scored:
        n = len(row["samples"])
        sims.append(cosine_matrix(emb[start : start + n]))
        start += n
    big = max(len(r["samples"]) for r in scored)
    # n = 2 is left out: two samples always tie, so "the pick" is the first one
    ns = [n for n in (4, 8, 16, 32, 64) if n < big] + [big]
    return pick_accuracy_by_n(scored, sims, ns)


def guard_steps(
    start: float,
    policy: RoundPolicy,
    measure: Callable[[float], dict[str, Any]],
    where: str = "",
) -> tuple[float, list[dict[str, Any]]]:
    """Raise the temperature by steps while the samples agree too much, to the cap.

    ``measure(T)`` labels the probe questions at T and returns their
    label-free signals; every probe is kept for the report.
    """
    temperature, probes = start, []
    cap = max(policy.guard_max_temperature, start)
    while True:
        signals = measure(temperature)
        reasons = policy.trips(signals)
        probes.append({"temperature": temperature, "trips": reasons, **signals})
        if not reasons:
            LOG.info("%s: guard keeps T=%.2f (%s)", where, temperature, signals)
            return temperature, probes
        if temperature >= cap:
            LOG.warning(
                "%s: guard at its cap T=%.2f and still %s",
                where,
                temperature,
                "; ".join(reasons),
            )
            return temperature, probes
        new = round(min(cap, temperature + policy.guard_temperature_step), 4)
        LOG.info(
            "%s: guard raises T %.2f -> %.2f: %s",
            where,
            temperature,
            new,
            "; ".join(reasons),
        )
        temperature = new


def margin_threshold(folder: Path, quantile: float) -> float:
    """The ``quantile`` of the best-worst MBR gaps over the round's pairs."""
    import numpy as np

    from axolotl_sealong.core.pipeline import read_rows

    gaps = [
        float(r["gap"])
        for r in read_rows(folder / "scored.jsonl")
        if r.get("rejected") is not None
    ]
    if not gaps:
        return 0.0
    return round(float(np.quantile(gaps, quantile)), 6)


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def row_gaps(folder: Path, mode: str) -> dict[str, float]:
    """The best-worst MBR gap behind every training row a labels folder made.

    Rows carry only their messages; ``scored.jsonl`` has the gaps, and
    ``row_sources`` says which scored row each written row came from.
    """
    from axolotl_sealong.core.pipeline import read_rows, row_sources
    from axolotl_sealong.integrations.axolotl.plugin import ROW_FILE

    scored = read_rows(folder / "scored.jsonl")
    rows = read_rows(folder / ROW_FILE[mode])
    sft, prefs = row_sources(scored)
    src = sft if mode == "sft" else prefs
    if len(src) != len(rows):
        raise RuntimeError(
            f"{folder}: {len(rows)} rows in {ROW_FILE[mode]} but {len(src)} in "
            "scored.jsonl; the folder is incomplete: relabel that round"
        )
    return {
        _row_key(row): float(scored[i]["gap"]) for row, i in zip(rows, src, strict=True)
    }


def own_rows(folder: Path, mode: str, margin: float | None) -> int:
    """Rows this round's labels give for training (pairs at or above ``margin``)."""
    from axolotl_sealong.core.pipeline import read_rows, row_sources

    scored = read_rows(folder / "scored.jsonl")
    sft, prefs = row_sources(scored)
    if mode == "sft":
        return len(sft)
    floor = float("-inf") if margin is None else margin
    return sum(1 for i in prefs if scored[i]["gap"] >= floor)


def pick_union(
    older: Sequence[tuple[int, list[dict[str, Any]], dict[str, float]]],
    budget: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The older rounds' rows with the largest MBR gaps, at most ``budget``.

    ``older``: (round, its training rows, their gaps by :func:`row_gaps`). The
    small-gap half of every round's pairs carried no preference signal on the
    dev split (docs/iterate_dev_runs.md), so those are the rows to leave out
    when the union must stay small. Ties go to the earlier round and row; the
    kept rows stay in file order.
    """
    ranked = []
    unmatched = 0
    for k, rows, gaps in older:
        for i, row in enumerate(rows):
            gap = gaps.get(_row_key(row))
            unmatched += gap is None
            ranked.append((-(float("-inf") if gap is None else gap), k, i, row))
    ranked.sort(key=lambda t: t[:3])
    keep = sorted(ranked[: max(budget, 0)], key=lambda t: t[1:3])
    by_round = {str(k): sum(1 for t in keep if t[1] == k) for k, _, _ in older}
    kept_gaps = [-t[0] for t in keep if t[0] != float("inf")]
    return [t[3] for t in keep], {
        "rows": len(keep),
        "older_rows": len(ranked),
        "by_round": by_round,
        "min_gap": round(min(kept_gaps), 6) if kept_gaps else None,
        "unmatched": unmatched,
    }


# --------------------------------------------------------------------------- #
# Recipes
# --------------------------------------------------------------------------- #
def load_recipe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"--config {path}: not an Axolotl YAML mapping")
    return cfg


def check_recipe(recipe: dict[str, Any], policy: RoundPolicy) -> None:
    """What iterate needs from a recipe, checked before any model loads."""
    from axolotl_sealong.core.config import LabelConfig
    from axolotl_sealong.integrations.axolotl.args import self_label_entries

    if PLUGIN not in (recipe.get("plugins") or []):
        raise ValueError(
            f"the recipe has no `plugins: [{PLUGIN}]`: sealong iterate labels "
            "through the plugin; add it (see sealong recipes list)"
        )
    if not self_label_entries(recipe):
        raise ValueError(
            "the recipe has no datasets: entry of type axolotl_sealong.self_label: "
            "that entry holds the questions each round labels"
        )
    if not recipe.get("base_model"):
        raise ValueError("the recipe has no base_model")
    LabelConfig.from_yaml_dict(recipe)  # every sealong_* key, before any work
    if policy.sample_with == "adapter" and recipe.get("adapter") not in ADAPTERS:
        raise ValueError(
            f"--sample-with adapter needs a LoRA recipe (adapter: lora or qlora; this "
            f"one has adapter: {recipe.get('adapter')!r}): use --sample-with merged"
        )


def read_pool(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the recipe's self-label entries, read by Axolotl's loader."""
    from axolotl.utils.dict import DictDefault

    from axolotl_sealong.integrations.axolotl.plugin import _read_questions

    return _read_questions(DictDefault(recipe))


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    from axolotl_sealong.core.pipeline import write_jsonl

    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, rows)
    return path


def _entry(path: Path, kind: str) -> dict[str, Any]:
    return {"path": str(path), "ds_type": "json", "split": "train", "type": kind}


# --------------------------------------------------------------------------- #
# The loop
# --------------------------------------------------------------------------- #
@dataclass
class Model:
    """A round's model: a folder, plus an adapter applied on top of it."""

    path: Path
    adapter: Path | None = None


class Iteration:
    """Rounds of label -> train -> merge -> eval over one recipe, in ``out``.

    ``pool(n)`` gives at least ``n`` question rows in a fixed order (fresh
    questions per round take consecutive slices of it); the default reads the
    recipe's self-label datasets.
    """

    def __init__(
        self,
        recipe: dict[str, Any],
        out: Path,
        stages: Stages,
        policy: RoundPolicy,
        evals: EvalSettings,
        *,
        pool: Callable[[int], list[dict[str, Any]]] | None = None,
        merge_dtype: str = "auto",
        launcher: str = "auto",
        resume_hint: str = "the same command",
        seed: int = 0,
    ) -> None:
        from axolotl_sealong.common.models import resolve_model
        from axolotl_sealong.integrations.axolotl.plugin import training_mode

        self.recipe = recipe
        self.out = out
        self.stages = stages
        self.policy = policy
        self.evals = evals
        self._pool = pool
        self._pool_rows: list[dict[str, Any]] | None = None
        self.merge_dtype = merge_dtype
        self.launcher = launcher
        self.resume_hint = resume_hint
        self.seed = seed
        self.base = Path(resolve_model(str(recipe["base_model"])))
        self.mode = training_mode(recipe)
        self.lora = recipe.get("adapter") in ADAPTERS
        self._tokenizer: Any = None

    # -- helpers ---------------------------------------------------------- #
    def rdir(self, r: int) -> Path:
        return self.out / f"round{r}"

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.base)
        return self._tokenizer

    def pool_rows(self, n: int) -> list[dict[str, Any]]:
        if self._pool is not None:
            return self._pool(n)
        if self._pool_rows is None:
            self._pool_rows = read_pool(self.recipe)
        return self._pool_rows

    def check_pool(self, rounds: int) -> None:
        """Fresh questions: the pool must hold K x rounds rows, none reused."""
        k = self.policy.questions_per_round
        if not k:
            return
        have = len(self.pool_rows(k * rounds))
        if have < k * rounds:
            raise ValueError(
                f"--questions-per-round {k} for {rounds} round(s) needs {k * rounds} "
                f"questions, but the recipe's self-label datasets hold {have}: add "
                f"questions, lower --questions-per-round to {have // rounds} or "
                f"--rounds to {have // k}"
            )

    def model_of(self, r: int) -> Model:
        """The model round ``r`` produced (0: the recipe's base model)."""
        if r == 0:
            return Model(self.base)
        rec = self.stages.done(f"merge_{r}")
        if rec is not None:
            return Model(Path(rec["model"]))
        train = self.stages.done(f"train_{r}")
        if train is None:
            raise RuntimeError(f"round {r} has not trained yet")
        if not self.lora:
            return Model(Path(train["model"]))
        return Model(Path(train["base_model"]), Path(train["adapter"]))

    # -- one round -------------------------------------------------------- #
    def questions(self, r: int) -> dict[str, Any]:
        """Round r's questions: a fresh slice of the pool, or the recipe's own."""
        k = self.policy.questions_per_round
        if not k:
            return {"fresh": False}
        rows = self.pool_rows(k * r)[(r - 1) * k : r * k]
        if len(rows) < k:
            raise ValueError(
                f"round {r} needs questions {(r - 1) * k}-{r * k - 1} of the pool, "
                f"which has {len(self.pool_rows(k * r))}"
            )
        path = write_rows(self.rdir(r) / "questions.jsonl", rows)
        LOG.info(
            "round %d: fresh questions %d-%d of the pool (%d) -> %s",
            r,
            (r - 1) * k,
            r * k - 1,
            len(rows),
            path,
        )
        return {"fresh": True, "path": str(path), "first": (r - 1) * k, "rows": k}

    def round_config(self, r: int, **over: Any) -> dict[str, Any]:
        """The recipe as round r runs it (sampling and training models, data)."""
        from axolotl_sealong.integrations.axolotl.args import self_label_entries

        cfg = dict(self.recipe)
        prev = self.model_of(r - 1)
        rdir = self.rdir(r)
        if r > 1:
            cfg["sealong_model"] = str(prev.path)
            cfg["sealong_adapter"] = str(prev.adapter) if prev.adapter else None
            # a recipe's own starting adapter belongs to round 1 only
            cfg["lora_model_dir"] = None
        if self.policy.train_from == "previous" and not prev.adapter:
            cfg["base_model"] = str(prev.path)
        else:
            cfg["base_model"] = str(self.base)
            if prev.adapter and self.policy.train_from == "previous":
                cfg["lora_model_dir"] = str(prev.adapter)
        q = self.stages.done(f"questions_{r}") or {}
        datasets = list(cfg.get("datasets") or [])
        if q.get("fresh"):
            keep = [d for d in datasets if d not in self_label_entries(cfg)]
            datasets = [_entry(Path(q["path"]), "axolotl_sealong.self_label"), *keep]
        if self.policy.train_from == "base":
            datasets += [_entry(Path(f), self.row_type) for f in self.union_paths(r)]
        cfg["datasets"] = datasets
        cfg["output_dir"] = str(rdir / ("adapter" if self.lora else "model"))
        cfg["dataset_prepared_path"] = str(rdir / "prepared")
        cfg["sealong_output_dir"] = None
        cfg.update(over)
        return {k: v for k, v in cfg.items() if v is not None}

    @property
    def row_type(self) -> str:
        from axolotl_sealong.integrations.axolotl.plugin import ROW_TYPE

        return ROW_TYPE[self.mode]

    def union_files(self, r: int) -> list[str]:
        """Training rows of rounds 1..r-1 (ReST-EM: the base trains on them all)."""
        files = []
        for k in range(1, r):
            rec = self.stages.done(f"train_{k}") or {}
            found = rec.get("train_file")
            if not found:  # runs recorded before train_file existed
                label = self.stages.done(f"label_{k}") or {}
                hits = sorted(
                    Path(label.get("folder", "")).glob(f"train_{self.mode}_*.jsonl")
                )
                found = str(hits[-1]) if label.get("folder") and hits else None
            if not found:
                raise RuntimeError(f"round {k} recorded no training file")
            files.append(found)
        return files

    def union_paths(self, r: int) -> list[str]:
        """What round r trains on besides its own rows: the bounded union's file
        once ``union_r`` ran, else every older round's training file."""
        bounded = self.stages.done(f"union_{r}")
        if bounded is None:
            return self.union_files(r)
        return [bounded["file"]] if bounded["rows"] else []

    def labels_of(self, k: int) -> Path:
        """The labels folder round k trained from (its margin filter applied)."""
        rec = self.stages.done(f"train_{k}") or {}
        folder = rec.get("labels") or (self.stages.done(f"label_{k}") or {}).get(
            "folder"
        )
        if not folder:
            raise RuntimeError(f"round {k} recorded no labels folder")
        return Path(folder)

    def union(self, r: int, labeled: dict[str, Any]) -> dict[str, Any]:
        """Bounded union: older rounds' rows with the largest gaps, up to the cap."""
        from axolotl_sealong.common.rows import write_jsonl
        from axolotl_sealong.core.pipeline import read_rows

        own = own_rows(Path(labeled["folder"]), self.mode, labeled.get("margin"))
        budget = max(0, self.policy.union_max_rows - own)
        older = [
            (k, read_rows(f), row_gaps(self.labels_of(k), self.mode))
            for k, f in enumerate(self.union_files(r), start=1)
        ]
        rows, stats = pick_union(older, budget)
        path = write_jsonl(self.rdir(r) / "union.jsonl", rows)
        LOG.info(
            "round %d: bounded union: %d own row(s) + %d of the %d older rows "
            "(largest MBR gaps, >= %s; by round %s) -> %s",
            r,
            own,
            stats["rows"],
            stats["older_rows"],
            stats["min_gap"],
            stats["by_round"],
            path,
        )
        if stats["unmatched"]:
            LOG.warning(
                "round %d: %d older row(s) matched no scored row (ranked last)",
                r,
                stats["unmatched"],
            )
        return {"file": str(path), "own_rows": own, "budget": budget, **stats}

    def write_config(self, r: int, name: str, **over: Any) -> Path:
        path = self.rdir(r) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.round_config(r, **over), sort_keys=False))
        return path

    def guard(self, r: int) -> dict[str, Any]:
        """Diversity guard: probe the round's first questions, raise T if they agree."""
        from axolotl_sealong.core.config import LabelConfig

        start = float(
            self.recipe.get("sealong_temperature") or LabelConfig().temperature
        )
        if r == 1 or not self.policy.guard:
            return {"temperature": start, "probes": []}
        temperature, probes = guard_steps(
            start, self.policy, lambda t: self.probe(r, t), f"round {r}"
        )
        return {"temperature": temperature, "probes": probes}

    def probe(self, r: int, temperature: float) -> dict[str, Any]:
        """Label the round's first questions at ``temperature``; their signals."""
        from axolotl.utils.dict import DictDefault

        from axolotl_sealong.core.diagnostics import label_free_signals
        from axolotl_sealong.core.pipeline import label, read_rows
        from axolotl_sealong.integrations.axolotl.plugin import (
            _read_questions,
            label_settings,
        )

        cfg = DictDefault(self.round_config(r, sealong_temperature=temperature))
        label_cfg = label_settings(cfg).model_copy(
            update={"max_questions": self.policy.guard_probe_questions}
        )
        rows = _read_questions(cfg)
        folder = self.rdir(r) / f"probe_T{temperature:g}"
        LOG.info(
            "round %d: guard probe, %d question(s) at T=%.2f -> %s",
            r,
            min(len(rows), self.policy.guard_probe_questions),
            temperature,
            folder,
        )
        label(label_cfg, rows, folder, progress=False)
        return label_free_signals(read_rows(folder / "scored.jsonl"))

    def run_round(self, r: int) -> dict[str, Any]:
        rdir, logs = self.rdir(r), self.out / "logs"
        config = rdir / "train.yml"
        self.stages.run(f"questions_{r}", lambda: self.questions(r))
        guard = self.stages.run(f"guard_{r}", lambda: self.guard(r))
        temperature = guard["temperature"]
        stop = self.stop_reason(guard)
        if stop:
            LOG.warning(
                "round %d: stopped before labeling (%s): the result is round %d's "
                "model",
                r,
                stop,
                r - 1,
            )
            return {
                "round": r,
                "stopped": stop,
                "result_round": r - 1,
                "policy": {"temperature": temperature, "probes": guard["probes"]},
            }

        def label() -> dict[str, Any]:
            self.write_config(r, "label.yml", sealong_temperature=temperature)
            cmd = axolotl_cmd("preprocess", rdir / "label.yml")
            run_logged(cmd, logs / f"label_{r}.log", f"label_{r}", self.resume_hint)
            folder = labeled_dir(rdir)
            summary = label_summary(folder, self.tokenizer)
            log_signals(r, summary)
            margin = None
            if self.policy.margin_quantile and r > 1:
                margin = margin_threshold(folder, self.policy.margin_quantile)
                LOG.info(
                    "round %d: margin filter keeps pairs with gap >= %.4f (the %.2f "
                    "quantile of %d pairs)",
                    r,
                    margin,
                    self.policy.margin_quantile,
                    summary["pairs"],
                )
            return {
                "command": shlex.join(cmd),
                "temperature": temperature,
                "margin": margin,
                **summary,
            }

        labeled = self.stages.run(f"label_{r}", label)
        if "signals" not in labeled:  # recorded before the signals existed
            labeled |= signals_of(Path(labeled["folder"]))

        union = None
        if self.policy.union_max_rows and self.policy.train_from == "base" and r > 1:
            union = self.stages.run(f"union_{r}", lambda: self.union(r, labeled))

        def train() -> dict[str, Any]:
            over: dict[str, Any] = {"sealong_temperature": temperature}
            if labeled.get("margin") is not None:
                over["sealong_margin"] = labeled["margin"]
            self.write_config(r, "train.yml", **over)
            before = labeled_dirs(rdir)
            cmd = axolotl_cmd("train", config, self.launcher)
            run_logged(cmd, logs / f"train_{r}.log", f"train_{r}", self.resume_hint)
            return self.train_record(r, cmd, before)

        trained = self.stages.run(f"train_{r}", train)
        if self.lora and self.policy.sample_with == "merged":
            self.stages.run(
                f"merge_{r}",
                lambda: merge_adapter(
                    Path(trained["base_model"]),
                    Path(trained["adapter"]),
                    rdir / "model",
                    self.merge_dtype,
                ),
            )
        return {
            "round": r,
            "sampled_by": "base model" if r == 1 else f"round {r - 1} model",
            "policy": {
                "temperature": temperature,
                "probes": guard["probes"],
                "margin": labeled.get("margin"),
                "questions": self.stages.done(f"questions_{r}"),
                "train_from": self.policy.train_from,
                "training_rows": trained.get("training_rows"),
                "union_rows": trained.get("union_rows"),
                "union": union,
            },
            **labeled,
        }

    def stop_reason(self, guard: dict[str, Any]) -> str | None:
        """Early stop: the guard ended at its cap with the probe still tripping."""
        probes = guard.get("probes") or []
        if not (self.policy.stop_at_guard_cap and probes and probes[-1]["trips"]):
            return None
        return f"guard at its cap T={guard['temperature']:g} and still " + "; ".join(
            probes[-1]["trips"]
        )

    def train_record(
        self, r: int, cmd: list[str], before: list[Path]
    ) -> dict[str, Any]:
        cfg = self.round_config(r)
        rdir = self.rdir(r)
        folder = labeled_dir(rdir, before)
        files = sorted(folder.glob(f"train_{self.mode}_*.jsonl"))
        rows = len(files[-1].read_text().splitlines()) if files else None
        rec: dict[str, Any] = {
            "command": shlex.join(cmd),
            "base_model": cfg["base_model"],
            "labels": str(folder),
            "train_file": str(files[-1]) if files else None,
            "training_rows": rows,
            "union_files": self.union_paths(r)
            if self.policy.train_from == "base"
            else [],
        }
        rec["union_rows"] = sum(
            len(Path(f).read_text().splitlines()) for f in rec["union_files"]
        )
        key = "adapter" if self.lora else "model"
        rec[key] = cfg["output_dir"]
        return rec

    def evaluate(self, r: int) -> dict[str, Any]:
        name = f"eval_{r}"
        model = self.model_of(r)
        folder = self.out / "eval" / name
        cmd = lm_eval_cmd(model.path, model.adapter, folder, self.evals)
        run_logged(cmd, self.out / "logs" / f"{name}.log", name, self.resume_hint)
        return {
            "tasks": read_eval(folder, self.evals.tasks, self.evals.metric),
            "command": shlex.join(cmd),
            "model": str(model.path),
            "adapter": str(model.adapter) if model.adapter else None,
        }

    def run(self, rounds: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every stage up to ``rounds`` (finished ones skipped): evals and rounds."""
        self.check_pool(rounds)
        evals = []
        if self.evals.tasks:
            evals.append(self.stages.run("eval_0", lambda: self.evaluate(0)))
        results = []
        for r in range(1, rounds + 1):
            results.append(self.run_round(r))
            if results[-1].get("stopped"):
                break
            if self.evals.tasks:
                evals.append(
                    self.stages.run(f"eval_{r}", lambda: self.evaluate(r))  # noqa: B023
                )
        return evals, results


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
def eval_rows(
    evals: list[dict[str, Any]], seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Per task: SubEM (or the metric) per round, gains vs before and vs previous."""
    per_task: dict[str, list[dict[str, Any]]] = {}
    tasks = [eval_tasks(e) for e in evals]
    for task in tasks[0] if tasks else {}:
        rows: list[dict[str, Any]] = []
        first = tasks[0][task]
        for i, (e, t) in enumerate(zip(evals, tasks, strict=True)):
            cur = t[task]
            if cur["doc_ids"] != first["doc_ids"]:
                raise RuntimeError(
                    f"the evaluations of {task} scored different questions; rerun "
                    "with --fresh"
                )
            row = {
                "label": "before" if i == 0 else f"round {i}",
                **demo_report.score_summary(cur["scores"], seed=seed),
                "output_tokens": round(demo_report.mean(cur["output_tokens"]), 1),
                "command": e["command"],
                "samples_file": cur["samples_file"],
            }
            if i:
                row.update(
                    demo_report.gain_summary(first["scores"], cur["scores"], seed=seed)
                )
                row["gain_vs_previous"] = demo_report.gain_summary(
                    tasks[i - 1][task]["scores"], cur["scores"], seed=seed
                )
            rows.append(row)
        per_task[task] = rows
    return per_task


def build_report(
    out: Path,
    *,
    kind: str,
    evals: list[dict[str, Any]],
    rounds: list[dict[str, Any]],
    stages: Stages,
    command: str,
    settings: dict[str, Any],
    extra: dict[str, Any] | None = None,
    title: str = "held-out",
    seed: int = 0,
) -> dict[str, Any]:
    """``report.json`` / ``report.md`` / PNGs of a run (demo or iterate)."""
    per_task = eval_rows(evals, seed)
    stopped = next((r for r in rounds if r.get("stopped")), None)
    rounds = [r for r in rounds if not r.get("stopped")]
    seconds = stages.seconds()
    seconds["total"] = round(sum(seconds.values()), 1)
    report: dict[str, Any] = {"kind": kind}
    if per_task:
        task, rows = next(iter(per_task.items()))
        final = rows[-1]
        report |= {
            "task": task,
            "before": rows[0]["subem"],
            "after": final["subem"],
            "gain": final.get("gain", 0.0),
            "gain_ci95": final.get("gain_ci95", [0.0, 0.0]),
            "significant": final.get("significant", False),
            "n_eval": rows[0]["n"],
            "evals": rows,
            "tasks": per_task,
        }
    report |= {
        "seconds": seconds,
        "adopted_stages": sorted(
            k for k, v in stages.state["stages"].items() if "from_run" in v
        ),
        "rounds": [
            {k: v for k, v in r.items() if k != "score_distribution"} for r in rounds
        ],
        "stopped": stopped,
        "settings": settings,
        **(extra or {}),
        "machine": machine(),
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    for task, rows in per_task.items():
        name = "before_after.png" if task == report.get("task") else f"{task}.png"
        demo_report.plot_before_after(rows, out / name, f"{task}, {title}")
    if rounds:
        demo_report.plot_scores(rounds, out / "mbr_scores.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(demo_report.render_markdown(report))
    LOG.info("wrote %s, %s and the PNGs", out / "report.md", out / "report.json")
    return report


def policy_settings(policy: RoundPolicy) -> dict[str, Any]:
    return dataclasses.asdict(policy)


def run_iterate(
    config: Path,
    out: Path,
    policy: RoundPolicy,
    evals: EvalSettings,
    *,
    rounds: int,
    fresh: bool = False,
    from_run: Path | None = None,
    from_round: int = 0,
    merge_dtype: str = "auto",
    launcher: str = "auto",
    command: str = "sealong iterate",
) -> dict[str, Any]:
    """``sealong iterate``: check everything, then run or resume every stage."""
    recipe = load_recipe(config)
    check_run_args(policy, rounds, merge_dtype, launcher, from_run, from_round)
    check_recipe(recipe, policy)
    demo_report.check_plotting()
    out = out.resolve()
    settings = {
        "recipe": recipe,
        **policy_settings(policy),
        "eval": dataclasses.asdict(evals),
        "merge_dtype": merge_dtype,
    }
    if fresh and out.exists():
        (out / STATE_FILE).unlink(missing_ok=True)
    # runs recorded before a policy existed resume with it off (its default)
    stages = Stages(out, settings, fresh, legacy=policy_settings(RoundPolicy()))
    it = Iteration(
        recipe,
        out,
        stages,
        policy,
        evals,
        merge_dtype=merge_dtype,
        launcher=launcher,
        resume_hint=command,
    )
    if from_run is not None:
        adopt_rounds(stages, from_run, from_round, bool(evals.tasks), it)
    t0 = time.perf_counter()
    eval_records, results = it.run(rounds)
    report = build_report(
        out,
        kind="iterate",
        evals=eval_records,
        rounds=results,
        stages=stages,
        command=command,
        settings=settings,
        extra={"recipe_path": str(config), "base_model": str(it.base)},
        title="evaluation",
    )
    LOG.info("iterate finished in %.0f s (this invocation)", time.perf_counter() - t0)
    return report


def round_stage_names(r: int) -> list[str]:
    names = ("questions", "guard", "label", "union", "train", "merge")
    return [f"{s}_{r}" for s in names]


def adopt_rounds(
    stages: Stages, other: Path, from_round: int, with_eval: bool, it: Iteration
) -> None:
    """``--from-run A --from-round R``: rounds < R (and eval_0) come from run A.

    Only the policies may differ between the two runs: they decide rounds >= R.
    """
    other = other.resolve()
    if not (other / STATE_FILE).is_file():
        raise FileNotFoundError(f"--from-run {other}: no {STATE_FILE} there")
    mine = dict(stages.state["settings"])
    theirs = json.loads((other / STATE_FILE).read_text()).get("settings", {})
    policy_keys = set(policy_settings(RoundPolicy()))
    differ = sorted(
        k for k in set(mine) | set(theirs)
        if k not in policy_keys and mine.get(k) != theirs.get(k)
    )  # fmt: skip
    if differ:
        raise ValueError(
            f"--from-run {other} was made with other settings ({', '.join(differ)}); "
            "only the round policies may differ"
        )
    names = ["eval_0"] if with_eval else []
    other_stages = json.loads((other / STATE_FILE).read_text())["stages"]
    merged = it.lora and it.policy.sample_with == "merged"
    for r in range(1, from_round):
        names += [n for n in round_stage_names(r) if n in other_stages]
        # a round counts only whole: its labels, its training, its model
        names += [f"label_{r}", f"train_{r}"] + ([f"merge_{r}"] if merged else [])
        names += [f"eval_{r}"] if with_eval else []
    names = list(dict.fromkeys(names))
    stages.adopt(other, names)
    LOG.info("adopted %s from %s", ", ".join(names), other)


def check_run_args(
    policy: RoundPolicy,
    rounds: int,
    merge_dtype: str,
    launcher: str,
    from_run: Path | None,
    from_round: int,
) -> None:
    policy.check()
    if rounds < 1:
        raise ValueError(f"--rounds {rounds}: must be >= 1")
    _one_of("merge_dtype", merge_dtype, MERGE_DTYPES)
    _one_of("launcher", launcher, LAUNCHERS)
    if (from_run is None) != (from_round == 0):
        raise ValueError(
            "--from-run and --from-round go together: --from-run DIR --from-round R "
            "takes eval_0 and rounds 1..R-1 from DIR"
        )
    if from_run is not None and not 2 <= from_round <= rounds:
        raise ValueError(
            f"--from-round {from_round}: must be in 2..--rounds ({rounds}); round 1 "
            "and earlier come from --from-run"
        )
