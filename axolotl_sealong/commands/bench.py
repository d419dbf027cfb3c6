"""`sealong bench ...`: the measurements quoted in README."""

from __future__ import annotations

import argparse
import json
from typing import Any


def run_mbr(args: argparse.Namespace) -> int:
    from axolotl_sealong.bench import bench_mbr

    result = bench_mbr(args.questions, args.samples, args.words, args.embedder)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


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
    mbr.add_argument("--json", action="store_true", help="one JSON object")
    mbr.set_defaults(func=run_mbr)
