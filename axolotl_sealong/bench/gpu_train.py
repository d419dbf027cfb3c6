"""The GPU check's training stage: a real ``axolotl train`` of the ORPO recipe.

At Llama-3.1-8B's shape with random weights (``gpu_check_llama31_8b.json``,
the tiny tokenizer), LoRA r=128 on every linear layer in bf16 (no 4-bit: the
bitsandbytes wheel is too big to travel), gradient checkpointing, micro batch
1, ``adamw_torch``: ``recipes/llama31_8b_orpo.yml``'s training block with
``max_steps: 2`` and ``gradient_accumulation_steps: 1``, once per sequence
length (16K and 32K tokens by default). It writes, into the GPU check's JSON
under ``"train"``: per length the seconds of each step, the peak GPU memory,
the tokens per row the trainer got, the trainer class and the attention
implementation, whether it ran out of memory (a result, not a crash), and
the versions that trained.

Labels. No vLLM on the GPU machine, and a random model's samples are noise
(mostly ids beyond the tiny tokenizer's vocabulary). So the *sampling* is
scripted: ``pipeline.label`` runs first (in a child process) with a scripted
sampler (N=4 texts per question of about ``max_new_tokens`` tokens, three
with one final answer, one with another) and fills the recipe's sample cache
(``sealong_cache_dir``). Then
``axolotl train`` runs with our plugin, which self-labels as it always does:
the prompts are rebuilt and middle-truncated to ``sequence_len -
max_new_tokens``, every sample is found in the cache, MBR scores them with the
``answer`` utility (no embedder), chosen/rejected rows are written and checked
against ``sequence_len``, and Axolotl trains on them with the plugin's
``ResponseNLLORPOTrainer``. The recipe's engine is ``openai`` at a closed local
port, so a cache miss fails at once instead of sampling anything.

A probe plugin listed after ours (``train_probe.py``) records the steps from
inside the training process. ``--dry-run`` does it all on the CPU with the
tiny config in float32 and short sequences (the test suite runs it).
Run it through ``bash scripts/gpu_check.sh`` (which installs the wheels the
bare GPU image lacks, see ``scripts/gpu_wheels.sh``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from axolotl_sealong.bench.micro import WORDS
from axolotl_sealong.common.rows import write_jsonl
from axolotl_sealong.sampling.base import SampleRequest, SamplingParams

ROOT = Path(__file__).resolve().parents[2]
# what train_probe.TrainProbePlugin writes into the run's output_dir
PROBE_FILE = "sealong_train_probe.json"
# numba's stand-in (scripts/gpu_standins/numba): see numba_standin_dir
STANDINS = ROOT / "scripts" / "gpu_standins"
ANSWER, OTHER = "Kel3", "Kel5"


def _words(rng: np.random.Generator, count: int) -> str:
    return " ".join(rng.choice(WORDS, size=count))


def _cut(tokenizer: Any, text: str, tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return str(tokenizer.decode(ids[:tokens]))


class ScriptedSampler:
    """N texts per question of about ``response_tokens`` tokens each.

    All but the last end with the same answer (``ANSWER``), the last with
    another, so MBR has a consensus to choose and a dissent to reject. The
    texts depend only on the question's seed and the sample's index.
    """

    name = "scripted"

    def __init__(self, tokenizer: Any, max_model_len: int, response_tokens: int):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.response_tokens = response_tokens

    def _text(self, seed: int, index: int, n: int) -> str:
        rng = np.random.default_rng([seed, index])
        answer = OTHER if index == n - 1 else ANSWER
        tail = f"\nThe answer is {answer}."
        room = self.response_tokens - len(
            self.tokenizer(tail, add_special_tokens=False)["input_ids"]
        )
        body = _cut(self.tokenizer, _words(rng, 2 * self.response_tokens), room)
        return body + tail

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        for req in requests:
            yield req, [self._text(req.seed, i, params.n) for i in range(params.n)]

    def close(self) -> None:
        pass


def write_questions(path: Path, count: int, context_words: int, seed: int) -> Path:
    """``count`` long-context questions; the pipeline cuts them to fit."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        fact = f"Passage {i}: Zorvan{i} lies on the river {ANSWER}."
        rows.append(
            {
                "context": fact + "\n" + _words(rng, context_words),
                "question": f"Which river does Zorvan{i} lie on?",
                "answers": [ANSWER],
            }
        )
    return write_jsonl(path, rows)


def flash_attn_importable() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def recipe(
    run: Path,
    model: Path,
    sequence_len: int,
    *,
    steps: int,
    max_new_tokens: int,
    lora_r: int,
    bf16: bool,
    attention: str,
) -> dict[str, Any]:
    """``recipes/llama31_8b_orpo.yml``'s training block, scaled to ``steps``."""
    return {
        "base_model": str(model),
        "plugins": [
            "axolotl_sealong.SeaLongPlugin",
            "axolotl_sealong.bench.train_probe.TrainProbePlugin",
        ],
        "datasets": [
            {
                "path": str(run / "questions.jsonl"),
                "ds_type": "json",
                "split": "train",
                "type": "axolotl_sealong.self_label",
            }
        ],
        # labeling: the samples come from the cache this stage fills first
        "sealong_num_samples": 4,
        "sealong_max_new_tokens": max_new_tokens,
        "sealong_prompt_strategy": "plan_and_solve",
        "sealong_utility": "answer",
        "sealong_rejected": "lower_half",
        "sealong_overlong": "truncate_middle",
        "sealong_seed": 42,
        "sealong_cache_dir": str(run / "samples"),
        "sealong_output_dir": str(run / "labels"),
        # a cache miss must fail at once: nothing listens on this port
        "sealong_sampler": "openai",
        "sealong_openai_base_urls": "http://127.0.0.1:9/v1",
        "sealong_openai_model": "scripted-gpu-check-samples",
        "sealong_openai_retries": 0,
        "sealong_openai_timeout": 5.0,
        # training: the recipe's, with 2 steps of one row each
        "rl": "orpo",
        "orpo_alpha": 0.1,
        "remove_unused_columns": False,
        "chat_template": "tokenizer_default",
        "adapter": "lora",
        "load_in_4bit": False,
        "lora_r": lora_r,
        "lora_alpha": lora_r,
        "lora_dropout": 0.05,
        "lora_target_linear": True,
        "sequence_len": sequence_len,
        "sample_packing": False,
        "learning_rate": 5.0e-5,
        "num_epochs": 1,
        "max_steps": steps,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.05,
        "weight_decay": 0.1,
        "max_grad_norm": 1.0,
        "optimizer": "adamw_torch",
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "bf16": bf16,
        "fp16": False,
        "tf32": bf16,
        "gradient_checkpointing": True,
        "attn_implementation": attention,
        "dataset_num_proc": 1,
        "save_strategy": "no",
        "logging_steps": 1,
        "output_dir": str(run / "out"),
        "dataset_prepared_path": str(run / "prepared"),
    }


def presample(cfg: dict[str, Any], run: Path, response_tokens: int) -> dict[str, Any]:
    """Fill the recipe's sample cache through ``pipeline.label``.

    The prompts are sized as the plugin sizes them (``recipe.label_config``:
    ``max_model_len`` from ``sequence_len``), so ``axolotl train`` finds every
    question in the cache. The rows written here are thrown away: the plugin
    writes its own.
    """
    from transformers import AutoTokenizer

    from axolotl_sealong.core.pipeline import label
    from axolotl_sealong.integrations.axolotl.recipe import (
        label_config,
        read_questions,
    )

    label_cfg = label_config(cfg)
    assert label_cfg.max_model_len is not None  # sequence_len is set
    tokenizer = AutoTokenizer.from_pretrained(label_cfg.model)
    sampler = ScriptedSampler(tokenizer, label_cfg.max_model_len, response_tokens)
    scratch = run / "presampled"
    result = label(
        label_cfg, read_questions(cfg), scratch, sampler=sampler, progress=False
    )
    shutil.rmtree(scratch, ignore_errors=True)
    return result.counts


def presample_in_child(
    config: Path, run: Path, response_tokens: int, env: dict[str, str]
) -> dict[str, Any]:
    """``presample`` on the recipe file as Axolotl will read it, in a child.

    Axolotl's dataset loader imports bitsandbytes, which asks CUDA for the
    device's capability: in a child, this process holds no CUDA context while
    Axolotl trains.
    """
    result = run / "presampled.json"
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import yaml\n"
        "from axolotl_sealong.bench.gpu_train import presample\n"
        "cfg = yaml.safe_load(Path(sys.argv[1]).read_text())\n"
        "counts = presample(cfg, Path(sys.argv[2]), int(sys.argv[3]))\n"
        "Path(sys.argv[4]).write_text(json.dumps(counts))\n"
    )
    args = [str(config), str(run), str(response_tokens), str(result)]
    subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, cwd=run)
    return dict(json.loads(result.read_text()))


def numba_standin_dir() -> Path | None:
    """The stand-in for numba, when numba is absent (and the stand-in exists).

    Axolotl imports numba at import time (``utils/samplers/multipack.py``) for
    sample packing's bin packing alone, which RL training never uses; numba's
    llvmlite wheel is 60 MB, over what may travel to the GPU machine. The
    stand-in's decorators return functions that raise if anything calls them.
    """
    if importlib.util.find_spec("numba") is not None:
        return None
    return STANDINS if (STANDINS / "numba" / "__init__.py").exists() else None


def _env(standin: Path | None) -> dict[str, str]:
    paths = [str(ROOT)]
    if standin is not None:
        paths.append(str(standin))
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _out_of_memory(log: str) -> str | None:
    for line in reversed(log.splitlines()):
        if "OutOfMemoryError" in line or "CUDA out of memory" in line:
            return line.strip()[:300]
    return None


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:]


def _labels_counts(run: Path) -> dict[str, Any] | None:
    from axolotl_sealong.core.pipeline import DIAGNOSTICS_FILE

    found = sorted((run / "labels").glob(f"*/{DIAGNOSTICS_FILE}"))
    if not found:
        return None
    return dict(json.loads(found[-1].read_text())["counts"])


def summarize(probe: dict[str, Any]) -> dict[str, Any]:
    """Seconds per step after the first (warm-up) step, and the peaks."""
    steps = probe.get("steps") or []
    seconds = [s["seconds"] for s in steps]
    later = seconds[1:] or seconds
    out: dict[str, Any] = {
        "steps_done": len(steps),
        "step_seconds": seconds,
        "seconds_per_step": round(sum(later) / len(later), 3) if later else None,
        "seconds_per_step_from": "steps 2.." if len(seconds) > 1 else "step 1",
        "step_peak_gib": [s.get("peak_gib") for s in steps],
        # GPU only (None on a CPU): see train_probe._Recorder
        "peak_gib": probe.get("peak_gib"),
        "peak_before_train_gib": probe.get("peak_before_train_gib"),
    }
    rows = probe.get("rows") or []
    out["rows"] = rows
    out["tokens_per_row_max"] = max(
        (max(r.get("chosen", 0), r.get("rejected", 0)) for r in rows), default=None
    )
    return out


def run_length(
    work: Path,
    model: Path,
    sequence_len: int,
    *,
    steps: int,
    max_new_tokens: int,
    lora_r: int,
    bf16: bool,
    attention: str,
    timeout_s: float,
    standin: Path | None,
    say: Any,
) -> dict[str, Any]:
    """One ``axolotl train`` at one sequence length: its row of the JSON."""
    import yaml

    run = work / f"train_{sequence_len}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    row: dict[str, Any] = {"sequence_len": sequence_len, "max_steps": steps}
    t0 = time.perf_counter()
    # twice the words the row needs: the pipeline cuts the middle to fit
    write_questions(run / "questions.jsonl", steps, 2 * sequence_len, sequence_len)
    cfg = recipe(
        run,
        model,
        sequence_len,
        steps=steps,
        max_new_tokens=max_new_tokens,
        lora_r=lora_r,
        bf16=bf16,
        attention=attention,
    )
    config = run / "gpu_train.yml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = _env(standin)
    row["presampled"] = presample_in_child(config, run, max_new_tokens - 16, env)
    row["presample_s"] = round(time.perf_counter() - t0, 1)
    log_path = run / "train.log"
    from axolotl_sealong.iterate.commands import axolotl_cmd

    cmd = axolotl_cmd("train", config)  # python -m axolotl.cli.main, one process
    say(f"axolotl train at sequence_len {sequence_len} (log: {log_path})")
    t1 = time.perf_counter()
    with log_path.open("w") as log:
        try:
            done = subprocess.run(
                cmd,
                cwd=run,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=max(timeout_s, 1.0),
            )
            row["returncode"] = done.returncode
            row["timed_out"] = False
        except subprocess.TimeoutExpired:
            row["returncode"] = None
            row["timed_out"] = True
    row["wall_s"] = round(time.perf_counter() - t1, 1)
    text = _tail(log_path, 200_000)
    row["out_of_memory"] = _out_of_memory(text)
    probe_path = run / "out" / PROBE_FILE
    probe = json.loads(probe_path.read_text()) if probe_path.exists() else {}
    began = probe.get("train_began")
    if began:
        started = time.time() - (time.perf_counter() - t1)
        row["startup_s"] = round(began - started, 1)
    row.update(summarize(probe))
    for key in (
        "trainer_class",
        "trainer_module",
        "response_nll_trainer",
        "attn_implementation",
        "model_dtype",
        "gradient_checkpointing",
        "trainable_parameters",
        "allocated_at_train_begin_gib",
        "trainer_metrics",
        "finished",
        "device",
        "versions",
    ):
        row[key] = probe.get(key)
    row["labels"] = _labels_counts(run)
    row["reused_presampled"] = bool(
        row["labels"]
        and row["labels"].get("sampled") == 0
        and row["labels"].get("cache_hits") == steps
    )
    ok = row["returncode"] == 0 and row.get("finished")
    if not ok and not row["out_of_memory"]:
        row["log_tail"] = text[-3000:]
    say(
        json.dumps(
            {
                k: row.get(k)
                for k in (
                    "sequence_len",
                    "returncode",
                    "step_seconds",
                    "peak_gib",
                    "out_of_memory",
                    "tokens_per_row_max",
                )
            }
        )
    )
    shutil.rmtree(run / "out", ignore_errors=True)  # the adapter (GBs at 8B)
    return row


def ensure_model(folder: Path, config: str, dtype: str, device: str) -> str:
    """Reuse the hf part's random model when it has this shape, else build one.

    Built in a child process, so this process never holds a CUDA context
    while Axolotl trains.
    """
    from axolotl_sealong.bench.gpu_check import model_config

    want = model_config(config)
    have_path = folder / "config.json"
    if have_path.exists() and any(folder.glob("*.safetensors")):
        have = json.loads(have_path.read_text())
        keys = ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")
        if all(have.get(k) == want[k] for k in keys):
            return "reused"
    code = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from axolotl_sealong.bench.gpu_check import build_model\n"
        "build_model(Path(sys.argv[1]), sys.argv[2], getattr(torch, sys.argv[3]), "
        "sys.argv[4])\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", code, str(folder), config, dtype, device],
        check=True,
        env=_env(None),
    )
    return "built"


def run_train_stage(
    *,
    dry_run: bool,
    seq_lens: tuple[int, ...],
    steps: int,
    budget_s: float,
    model_dir: str | None,
    workdir: str | None,
    say: Any = None,
) -> dict[str, Any]:
    """Every length within the budget; returns the JSON's ``"train"`` object."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    config = "tiny" if dry_run else "llama31_8b"
    out: dict[str, Any] = {
        "config": config,
        "device": "cpu" if dry_run else "cuda",
        "dtype": "float32" if dry_run else "bfloat16",
        "budget_s": budget_s,
        "sequence_lens": list(seq_lens),
        "max_steps": steps,
    }
    if importlib.util.find_spec("axolotl") is None:
        out["skipped"] = (
            "axolotl is not importable: run `bash scripts/gpu_wheels.sh` on a "
            "machine with network and carry .whl/gpu_wheels.tar.xz"
        )
        return out
    if not dry_run:
        import torch

        if not torch.cuda.is_available():
            raise ValueError("no CUDA device here: use --dry-run for the CPU check")
    flash = flash_attn_importable()
    attention = "flash_attention_2" if not dry_run and flash else "sdpa"
    standin = numba_standin_dir()
    out.update(
        attention_requested=attention,
        flash_attn_importable=flash,
        numba="stand-in (absent; scripts/gpu_standins)" if standin else "installed",
        lora_r=16 if dry_run else 128,
        max_new_tokens=64 if dry_run else 1024,
        samples=(
            "scripted: pipeline.label with ScriptedSampler filled the sample "
            "cache; the plugin labeled from it inside axolotl train (MBR utility "
            "answer, N=4)"
        ),
    )
    wheels = os.environ.get("SEALONG_GPU_WHEELS_INSTALLED")
    if wheels and Path(wheels).exists():
        out["wheels"] = json.loads(Path(wheels).read_text())
    work = Path(workdir or tempfile.mkdtemp(prefix="sealong_gpu_train_"))
    model = Path(model_dir) if model_dir else work / "model"
    try:
        out["model"] = ensure_model(model, config, out["dtype"], out["device"])
        out["model_s"] = round(time.perf_counter() - t0, 1)
        runs = []
        for seq in seq_lens:
            left = budget_s - (time.perf_counter() - t0)
            if left <= 0:
                runs.append({"sequence_len": seq, "skipped": "time budget"})
                continue
            try:
                row = run_length(
                    work,
                    model,
                    seq,
                    steps=steps,
                    max_new_tokens=out["max_new_tokens"],
                    lora_r=out["lora_r"],
                    bf16=not dry_run,
                    attention=attention,
                    timeout_s=left,
                    standin=standin,
                    say=say,
                )
            except Exception as err:  # noqa: BLE001 - one length's failure is a row
                say(f"sequence_len {seq}: {type(err).__name__}: {err}")
                row = {"sequence_len": seq, "error": f"{type(err).__name__}: {err}"}
            runs.append(row)
        # the same packages train every length: once, at the top
        versions = [r.pop("versions", None) for r in runs]
        out["versions"] = next((v for v in versions if v), None)
        out["runs"] = runs
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    out["total_s"] = round(time.perf_counter() - t0, 1)
    return out


def merge_into(path: Path, train: dict[str, Any]) -> dict[str, Any]:
    """Add ``"train"`` to the GPU check's JSON (made if the hf part did not run)."""
    report: dict[str, Any] = {}
    if path.exists():
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            report = {"previous_file_unreadable": True}
    report["train"] = train
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def build_parser(
    parser: argparse.ArgumentParser | None = None,
) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m axolotl_sealong.bench.gpu_train",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--out", default="gpu_check.json", help="JSON to add to")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny config on the CPU, float32, sequence lengths 384 and 512",
    )
    parser.add_argument(
        "--seq-lens",
        default=None,
        help="comma-separated sequence lengths (default 16384,32768)",
    )
    parser.add_argument("--steps", type=int, default=2, help="max_steps per length")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=270.0,
        help="a length not started within this many seconds of the stage's "
        "start is skipped, and a run is stopped at it (default 270)",
    )
    parser.add_argument(
        "--model", help="the random model's folder (the hf part's; built if absent)"
    )
    parser.add_argument("--workdir", help="keep the runs here (default: temp)")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.seq_lens:
        seq_lens = tuple(int(s) for s in args.seq_lens.split(",") if s.strip())
    else:
        seq_lens = (384, 512) if args.dry_run else (16384, 32768)
    train = run_train_stage(
        dry_run=args.dry_run,
        seq_lens=seq_lens,
        steps=args.steps,
        budget_s=args.budget_s,
        model_dir=args.model,
        workdir=args.workdir,
    )
    merge_into(Path(args.out), train)
    summary = {
        str(r["sequence_len"]): {
            k: r.get(k) for k in ("seconds_per_step", "peak_gib", "out_of_memory")
        }
        for r in train.get("runs", [])
    }
    print(json.dumps({"out": args.out, "train": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
