"""`sealong check RECIPE.yml`: the preflight of a run, in seconds, before hours.

Also ``axolotl sealong check RECIPE.yml`` (``cli/axolotl_command.py``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def run(args: argparse.Namespace) -> int:
    from axolotl_sealong.integrations.axolotl.preflight import (
        Assumptions,
        run_checks,
    )

    report = run_checks(
        args.recipe,
        Assumptions(args.prefill_tps, args.decode_tps, args.output_tokens),
        embedder=not args.no_embedder,
    )
    print("\n".join(report.lines()))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 1 if report.failed else 0


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return value

    return parse


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "check",
        help="preflight a recipe: everything the run needs, in seconds",
        description=(
            "Check a recipe before a run: the recipe as Axolotl reads it, the "
            "packages training needs (flash-attn, deepspeed), the questions file "
            "(rows, prompt tokens with the model's tokenizer, how many are over "
            "the limit), the sampling environment (vLLM, torch, CUDA, the visible "
            "GPUs, the driver) and its parallel plan, the embedder (loaded on the "
            "CPU and made to embed a sentence), the labels folder and sample "
            "cache, and an estimate of the labeling time and tokens. Holds no GPU "
            "memory. Exits 1 if any check fails, each with its fix. `axolotl "
            "preprocess` and `axolotl train` run the same checks before sampling."
        ),
    )
    parser.add_argument("recipe", help="an Axolotl YAML with the SeaLong plugin")
    parser.add_argument(
        "--prefill-tps",
        type=_positive(float),
        help="estimate: prompt tokens/s per GPU (default 10000 on a GPU, an "
        "assumption for an 8B model on an H100; 560 per process on a CPU, the "
        "CPU demo's rate: docs/gpu.md, 'The preflight')",
    )
    parser.add_argument(
        "--decode-tps",
        type=_positive(float),
        help="estimate: new tokens/s per GPU over all samples in flight (default "
        "1500 on a GPU; 310 per process on a CPU)",
    )
    parser.add_argument(
        "--output-tokens",
        type=_positive(int),
        help="estimate: mean new tokens per sample (default 300, at most "
        "sealong_max_new_tokens)",
    )
    parser.add_argument(
        "--no-embedder", action="store_true", help="skip loading the embedder"
    )
    parser.add_argument("--json", help="also write the report as JSON here")
    parser.set_defaults(func=run)
