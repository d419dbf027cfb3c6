"""The GPU check: the ``hf`` engine on CUDA at Llama-3.1-8B's shape, in one call.

Made for a bare CUDA machine (torch and transformers, no network, no axolotl,
no vLLM, no pydantic): it imports only the engine. It builds a model with
Llama-3.1-8B's shape and random weights in bf16 (weights cannot travel: the
repo ships the config), the tiny tokenizer of ``axolotl_sealong.bench.tiny``, then:

1. checks that greedy N=1 from the shared-prefix engine equals ``generate``
   token for token, and that seeded samples repeat;
2. times N=32 vs N=1 from a 16K-token prompt for ``shared_prefix``,
   ``expand`` and ``generate``, with the peak GPU memory of each run (an
   out-of-memory run is reported as such);
3. writes one JSON.

Samples are compared as token ids: the random model's tokens are mostly
beyond the tiny tokenizer's vocabulary, which decoding would drop. A time
budget skips what is left (and says so) so the whole check ends in minutes.
``--dry-run`` does the same on a CPU with a tiny config (the test suite runs
it). Run it as ``bash scripts/gpu_check.sh`` or ``sealong bench gpu``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from axolotl_sealong.sampling.base import SampleRequest, SamplingParams
from axolotl_sealong.sampling.hf import HFSampler

CONFIGS = ("llama31_8b", "tiny")
METHODS = ("shared_prefix", "expand", "generate")


class _IdSampler(HFSampler):
    """Samples as space-separated token ids instead of decoded text."""

    def _texts(self, tokens: list[list[int]]) -> list[str]:
        return [" ".join(str(t) for t in row) for row in tokens]


@contextlib.contextmanager
def _method(sampler: HFSampler, method: str) -> Iterator[None]:
    """Run the same loaded model as another method (one 16 GB load, not three).

    The shared-prefix attention function is plain SDPA when no prefix is
    passed, which is what ``expand`` and ``generate`` use.
    """
    saved = sampler.method
    sampler.method = method
    try:
        yield
    finally:
        sampler.method = saved


def model_config(name: str) -> dict[str, Any]:
    data = resources.files("axolotl_sealong.bench").joinpath(f"gpu_check_{name}.json")
    config = json.loads(data.read_text())
    config.pop("_comment", None)
    return config


def build_model(folder: Path, config_name: str, dtype: Any, device: str) -> Path:
    """Random weights in the config's shape, saved with the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from axolotl_sealong.bench.tiny import build_tiny_tokenizer

    build_tiny_tokenizer(folder, model_max_length=1_000_000)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    raw = model_config(config_name)
    raw.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model_type = raw.pop("model_type")
    config = AutoConfig.for_model(model_type, **raw)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed_run(
    sampler: HFSampler,
    method: str,
    message: str,
    n: int,
    new_tokens: int,
    device: str,
) -> dict[str, Any]:
    """Seconds and peak memory of N samples; an OOM is a result, not a crash."""
    import torch

    params = SamplingParams(n, 0.7, 1.0, new_tokens, 0, ignore_eos=True)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    row: dict[str, Any] = {"method": method, "n": n}
    _sync(device)
    start = time.perf_counter()
    try:
        with _method(sampler, method):
            out = list(sampler.sample([SampleRequest("g", message, n)], params))
        _sync(device)
        row["seconds"] = round(time.perf_counter() - start, 3)
        row["samples"] = len(out[0][1])
        row["tokens_per_s"] = round(n * new_tokens / row["seconds"], 1)
        if sampler.last_timing and method != "generate":
            row.update({k: round(v, 3) for k, v in sampler.last_timing.items()})
    except torch.cuda.OutOfMemoryError as err:
        row["out_of_memory"] = str(err).split("\n")[0][:300]
        row["seconds"] = None
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.empty_cache()
    return row


def run_check(
    config: str = "llama31_8b",
    device: str = "cuda",
    dtype_name: str = "bfloat16",
    prompt_tokens: int = 16384,
    n: int = 32,
    new_tokens: int = 128,
    check_prompt_tokens: int = 512,
    check_new_tokens: int = 32,
    budget_s: float = 180.0,
    workdir: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """The whole check; returns what goes into the JSON."""
    import torch
    import transformers

    from axolotl_sealong.bench.micro import _prompt_of
    from axolotl_sealong.sampling.base import torch_dtype

    t0 = time.perf_counter()
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("no CUDA device here: use --dry-run for the CPU check")
    dtype = torch_dtype(dtype_name, device)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "gpu_total_gib": round(
            torch.cuda.get_device_properties(0).total_memory / 2**30, 1
        )
        if device.startswith("cuda")
        else None,
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "config": config,
        "dtype": str(dtype).replace("torch.", ""),
        "prompt_tokens": prompt_tokens,
        "n": n,
        "new_tokens": new_tokens,
    }
    folder = Path(workdir or tempfile.mkdtemp(prefix="sealong_gpu_check_"))
    try:
        say(f"building a random {config} model in {folder}")
        build_model(folder, config, dtype, device)
        report["build_s"] = round(time.perf_counter() - t0, 1)
        t1 = time.perf_counter()
        sampler = _IdSampler(
            str(folder),
            dtype=dtype_name,
            device=device,
            max_model_len=prompt_tokens + new_tokens + 64,
        )
        report["load_s"] = round(time.perf_counter() - t1, 1)
        report["method_loaded"] = sampler.method
        report["checks"] = _checks(
            sampler, check_prompt_tokens, check_new_tokens, _prompt_of
        )
        say(f"checks: {json.dumps(report['checks'])}")
        report["runs"] = _timings(
            sampler, prompt_tokens, n, new_tokens, device, budget_s, t0, say
        )
        report["summary"] = _summary(report["runs"], n)
        sampler.close()
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    return report


def _checks(
    sampler: HFSampler, prompt_tokens: int, new_tokens: int, prompt_of: Any
) -> dict[str, Any]:
    """Greedy N=1 equals generate; seeded samples repeat; other seeds differ."""
    message = prompt_of(sampler.tokenizer, prompt_tokens, 1)
    greedy = SamplingParams(1, 0.0, 1.0, new_tokens, 0, ignore_eos=True)
    req = SampleRequest("check", message, 11)

    def ids(method: str, params: SamplingParams, seed: int = 11) -> list[list[str]]:
        with _method(sampler, method):
            one = SampleRequest("check", message, seed)
            return [t.split() for t in next(iter(sampler.sample([one], params)))[1]]

    shared = ids("shared_prefix", greedy)[0]
    with _method(sampler, "generate"):
        reference = next(iter(sampler.sample([req], greedy)))[1][0].split()
    agree = next(
        (i for i, (a, b) in enumerate(zip(shared, reference, strict=True)) if a != b),
        len(shared),
    )
    sampled = SamplingParams(4, 0.7, 1.0, new_tokens, 0, ignore_eos=True)
    first, again, other = (
        ids("shared_prefix", sampled),
        ids("shared_prefix", sampled),
        ids("shared_prefix", sampled, seed=12),
    )
    return {
        "greedy_equals_generate": shared == reference,
        "greedy_tokens_agreeing": agree,
        "greedy_tokens": len(shared),
        "seeded_samples_repeat": first == again,
        "other_seed_differs": first != other,
        "samples_distinct": len({" ".join(s) for s in first}),
    }


def _timings(
    sampler: HFSampler,
    prompt_tokens: int,
    n: int,
    new_tokens: int,
    device: str,
    budget_s: float,
    t0: float,
    say: Any,
) -> list[dict[str, Any]]:
    from axolotl_sealong.bench.micro import _prompt_of

    rows: list[dict[str, Any]] = []
    # a short warm-up: kernels, allocator, cuBLAS handles
    _timed_run(
        sampler, "shared_prefix", _prompt_of(sampler.tokenizer, 256, 2), 2, 4, device
    )
    for i, method in enumerate(METHODS):
        for j, count in enumerate((1, n)):
            if time.perf_counter() - t0 > budget_s:
                rows.append({"method": method, "n": count, "skipped": "time budget"})
                continue
            message = _prompt_of(sampler.tokenizer, prompt_tokens, 100 + 10 * i + j)
            row = _timed_run(sampler, method, message, count, new_tokens, device)
            say(json.dumps(row))
            rows.append(row)
    return rows


def _summary(rows: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Per method: N=n over N=1 seconds; at N=n: each method over shared_prefix."""
    seconds = {(r["method"], r["n"]): r.get("seconds") for r in rows}
    out: dict[str, Any] = {}
    for method in METHODS:
        one, many = seconds.get((method, 1)), seconds.get((method, n))
        out[f"{method}_n{n}_over_n1"] = round(many / one, 2) if one and many else None
    base = seconds.get(("shared_prefix", n))
    for method in ("expand", "generate"):
        other = seconds.get((method, n))
        key = f"{method}_over_shared_prefix_n{n}"
        out[key] = round(other / base, 2) if base and other else None
    return out


def build_parser(
    parser: argparse.ArgumentParser | None = None,
) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m axolotl_sealong.bench.gpu_check",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument("--out", default="gpu_check.json", help="the JSON written")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny config on the CPU, float32, 512-token prompt, N=4 (for tests)",
    )
    parser.add_argument("--config", choices=CONFIGS, default=None)
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=180.0,
        help="after this many seconds the remaining timed runs are skipped "
        "(reported as such), so the check ends in minutes (default 180; the "
        "whole part took 60-90 s on an H200)",
    )
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float16", "float32"),
        default=None,
        help="weights and compute dtype (default bfloat16; float32 on --dry-run): "
        "float32 tells a kernel bug from bf16 rounding when greedy tokens differ",
    )
    parser.add_argument("--workdir", help="keep the random model here (default: temp)")
    return parser


def main(args: argparse.Namespace) -> int:
    dry = args.dry_run
    report = run_check(
        config=args.config or ("tiny" if dry else "llama31_8b"),
        device="cpu" if dry else "cuda",
        dtype_name=args.dtype or ("float32" if dry else "bfloat16"),
        prompt_tokens=args.prompt_tokens or (512 if dry else 16384),
        n=args.n or (4 if dry else 32),
        new_tokens=args.new_tokens or (8 if dry else 128),
        check_prompt_tokens=64 if dry else 512,
        check_new_tokens=8 if dry else 32,
        budget_s=args.budget_s,
        workdir=args.workdir,
    )
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"out": args.out, **report.get("summary", {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
