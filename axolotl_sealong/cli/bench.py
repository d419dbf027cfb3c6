"""`sealong bench ...`: the measurements quoted in README."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _print_row(row: dict[str, Any], as_json: bool, width: int) -> int:
    """One result: a JSON object, or ``key: value`` lines."""
    if as_json:
        print(json.dumps(row))
    else:
        for key, value in row.items():
            print(f"{key:>{width}}: {value}")
    return 0


def run_mbr(args: argparse.Namespace) -> int:
    from axolotl_sealong.bench.micro import bench_mbr

    result = bench_mbr(
        args.questions,
        args.samples,
        args.words,
        args.embedder,
        trust_remote_code=args.embedder_trust_remote_code,
    )
    return _print_row(result, args.json, 22)


def run_sampling(args: argparse.Namespace) -> int:
    import os
    import sys

    # vLLM logs to stdout by default; keep stdout for the JSON alone
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

    from axolotl_sealong.bench.micro import bench_sampling

    engines = [e.strip() for e in args.engines.split(",")] if args.engines else None
    try:
        tokens = tuple(int(t) for t in args.prompt_tokens.split(","))
    except ValueError:
        raise ValueError(
            f"--prompt-tokens {args.prompt_tokens!r}: give prompt lengths in "
            "tokens, comma-separated (e.g. 2048,6144)"
        ) from None

    def progress(row: dict[str, Any]) -> None:
        print(json.dumps(row), file=sys.stderr, flush=True)

    rows = bench_sampling(
        engines,
        tokens,
        args.max_new_tokens,
        args.n,
        args.model,
        args.openai_base_urls,
        log=progress,
        repeats=args.repeats,
    )
    if args.json:
        print(json.dumps(rows))
    else:
        print(
            "engine        prompt  N=1 s   N=%d s  ratio  tok/s N=%d" % (args.n, args.n)
        )
        for r in rows:
            print(
                f"{r['engine']:<12} {r['prompt_tokens']:>7} {r['n1_s']:>6} "
                f"{r['n8_s']:>7} {r['ratio']:>6} {r['tokens_per_s_n8']:>9}"
            )
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from axolotl_sealong.bench.micro import bench_decode

    row = bench_decode(
        args.engine,
        args.prompt_tokens,
        args.steps,
        args.n,
        args.model,
        args.repeats,
        args.profile_ops,
    )
    return _print_row(row, args.json, 16)


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="benchmarks quoted in README")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    mbr = benches.add_parser(
        "mbr",
        help="embedding vs scoring cost of MBR",
        description="Embed Q x N synthetic outputs of about 300 tokens in one "
        "batched call, then score and select per question; prints seconds for "
        "each (embed_s, score_s).",
    )
    mbr.add_argument("--questions", type=int, default=200, help="Q (default 200)")
    mbr.add_argument("--samples", type=int, default=16, help="N (default 16)")
    mbr.add_argument(
        "--words", type=int, default=290, help="words per text (~300 tokens)"
    )
    mbr.add_argument("--embedder", default="embedded:all-minilm-l6-v2")
    mbr.add_argument(
        "--embedder-trust-remote-code",
        action="store_true",
        help="let the embedder run its repository's code (jina-embeddings-v3)",
    )
    mbr.add_argument("--json", action="store_true", help="one JSON object")
    mbr.set_defaults(func=run_mbr)
    sampling = benches.add_parser(
        "sampling",
        help="seconds for N=1 vs N=8 samples of a long prompt, per engine",
        description="For each engine available here (hf; vllm when it imports; "
        "openai when --openai-base-urls is given), the seconds to sample N=1 "
        "and N=8 outputs of --max-new-tokens tokens (EOS ignored) from one "
        "prompt of each --prompt-tokens length, their ratio and tokens per "
        "second. Each run gets a fresh prompt (no prefix-cache hits); start-up "
        "is reported apart (load_s). Progress goes to stderr.",
    )
    sampling.add_argument(
        "--engines",
        help="comma-separated: hf (its defaults), hf-bf16kv / hf-fp32kv (the "
        "prompt cache in bfloat16 / float32), hf-torch-linear (float32 cache, "
        "torch's own linear: hf_packed_linear false), hf-expand, "
        "hf-generate, vllm, openai (default: hf, and vllm / openai when "
        "available)",
    )
    sampling.add_argument("--prompt-tokens", default="2048,6144")
    sampling.add_argument("--max-new-tokens", type=int, default=128)
    sampling.add_argument("--n", type=int, default=8, help="N (default 8)")
    sampling.add_argument("--model", default="embedded:smollm2-135m-instruct")
    sampling.add_argument("--openai-base-urls", help="server(s) for the openai row")
    sampling.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="N=1 / N=8 pairs per length; medians reported (default 1)",
    )
    sampling.add_argument("--json", action="store_true", help="one JSON list")
    sampling.set_defaults(func=run_sampling)
    decode = benches.add_parser(
        "decode",
        help="ms per decode step at N=1 vs N=8 (hf engines), optionally profiled",
        description="Prefill one prompt, then time --steps decode steps of an hf "
        "shared-prefix engine at N=1 and N=8 (--repeats pairs, medians). With "
        "--profile-ops K, also torch.profiler self time per step of the K "
        "costliest operators at N=8, next to their N=1 time.",
    )
    decode.add_argument(
        "--engine",
        default="hf",
        help="hf, hf-bf16kv, hf-fp32kv or hf-torch-linear",
    )
    decode.add_argument("--prompt-tokens", type=int, default=2048)
    decode.add_argument("--steps", type=int, default=48)
    decode.add_argument("--n", type=int, default=8, help="N (default 8)")
    decode.add_argument("--model", default="embedded:smollm2-135m-instruct")
    decode.add_argument("--repeats", type=int, default=3)
    decode.add_argument("--profile-ops", type=int, default=0, metavar="K")
    decode.add_argument("--json", action="store_true", help="one JSON object")
    decode.set_defaults(func=run_decode)
    gpu = benches.add_parser(
        "gpu",
        help="the hf engine on CUDA at Llama-3.1-8B's shape (random weights): "
        "checks, N=32 vs N=1 from 16K tokens, peak memory, one JSON",
        description="Builds a random-weight model with Llama-3.1-8B's shape in "
        "bf16 on the GPU, checks the shared-prefix engine (greedy N=1 equals "
        "generate, seeded samples repeat), times N=32 vs N=1 from a 16K-token "
        "prompt against expand and generate with peak memory, and writes one "
        "JSON. Needs torch and transformers only. scripts/gpu_check.sh runs it "
        "on a bare CUDA machine, then the training stage (an axolotl train, "
        "axolotl_sealong.bench.gpu_train). --dry-run: a tiny config on the CPU.",
    )
    from axolotl_sealong.bench.gpu_check import build_parser

    build_parser(gpu)
    gpu.set_defaults(func=run_gpu)


def run_gpu(args: argparse.Namespace) -> int:
    from axolotl_sealong.bench.gpu_check import main

    return main(args)
