"""`sealong`: one console script, one sub-command module per feature.

Each module in ``COMMANDS`` exposes ``register(subparsers)``; heavy imports
(torch, transformers, axolotl) stay inside the handlers so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from axolotl_sealong.cli.epilog import GPU_EPILOG

COMMANDS: tuple[str, ...] = (
    "axolotl_sealong.cli.check",
    "axolotl_sealong.cli.label",
    "axolotl_sealong.cli.data",
    "axolotl_sealong.cli.recipes",
    "axolotl_sealong.cli.eval",
    "axolotl_sealong.cli.bench",
    "axolotl_sealong.cli.demo",
    "axolotl_sealong.cli.iterate",
)


def build_parser(prog: str = "sealong") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "SEALONG self-improvement for long-context reasoning: sample N outputs\n"
            "per question, score them by Minimum Bayes Risk, and build SFT /\n"
            "preference rows for Axolotl."
        ),
        epilog=GPU_EPILOG,
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


def main(argv: list[str] | None = None, prog: str = "sealong") -> int:
    parser = build_parser(prog)
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
