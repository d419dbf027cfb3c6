"""`sealong`: one console script, one sub-command module per feature.

Each module in ``COMMANDS`` exposes ``register(subparsers)``; heavy imports
(torch, transformers, axolotl) stay inside the handlers so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS: tuple[str, ...] = (
    "axolotl_sealong.cli.label",
    "axolotl_sealong.cli.data",
    "axolotl_sealong.cli.recipes",
    "axolotl_sealong.cli.eval",
    "axolotl_sealong.cli.bench",
    "axolotl_sealong.cli.demo",
    "axolotl_sealong.cli.iterate",
)


def _gpu_epilog() -> str:
    """`sealong --help`'s closing lines: the GPU install (requirements.py's lines,
    the ones the plugin's missing-package error and the README name)."""
    from axolotl_sealong.integrations.axolotl.requirements import (
        INSTALL_ONE_ENV,
        INSTALL_TRAINER,
    )

    one, trainer = (
        "\n".join("    " + c for c in cmds)
        for cmds in (INSTALL_ONE_ENV, INSTALL_TRAINER)
    )
    return (
        "GPU install: torch first; flash-attn 2.8.3 and deepspeed then build\n"
        "against it (needs nvcc). One environment, with vllm 0.20.0-0.23.0 beside\n"
        "axolotl 0.19:\n"
        f"{one}\n"
        "or the trainer alone, plus any vLLM in a second environment:\n"
        f"{trainer}\n"
        "    SEALONG_VLLM_SPEC=vllm==X bash scripts/setup_vllm.sh\n"
        "The GPU recipes sample with sealong_sampler: vllm_server (a `vllm serve`\n"
        "the run starts and stops) from sealong_vllm_server_python, else this env\n"
        "if vllm imports, else $SEALONG_VLLM_PYTHON, else .venv-vllm.\n"
        "Then: axolotl train RECIPE.yml (a one-GPU recipe on a bigger node:\n"
        "CUDA_VISIBLE_DEVICES=0 axolotl train RECIPE.yml), or sealong label\n"
        "--config RECIPE.yml --out DIR.\n"
        "GPU check: bash scripts/gpu_check.sh (sealong bench gpu)."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealong",
        description=(
            "SEALONG self-improvement for long-context reasoning: sample N outputs\n"
            "per question, score them by Minimum Bayes Risk, and build SFT /\n"
            "preference rows for Axolotl."
        ),
        epilog=_gpu_epilog(),
        # keep the epilog's command lines whole
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG level"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Import-time notices of optional CUDA kernels that cannot apply on CPU.
    for noisy in ("torchao", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # one line per HTTP request to a sampling server: noise at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"sealong {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        # Bad input (ValueError, a missing file: OSError) or a failure the
        # message explains (a dead server, a missing package): one clear
        # line, no traceback (sealong -v shows it).
        if args.verbose:
            raise
        hint = (
            ""
            if isinstance(err, ValueError | FileNotFoundError)
            else (f" (sealong -v {args.command} ... shows the traceback)")
        )
        message = str(err) or type(err).__name__
        print(f"sealong {args.command}: error: {message}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
