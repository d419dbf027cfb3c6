"""`sealong eval ...`: lm-eval with the ``longbench_sealong`` tasks reachable.

Every argument goes to lm-eval unchanged (``sealong eval --model hf --tasks
longbench_sealong ...``, ``sealong eval ls tasks``, ``sealong eval validate
--tasks sealong_synth``). When lm-eval does not already index the installed task
folder (a source checkout or editable install of lm-eval, or of this project),
``--include_path <task folder>`` is appended. ``sealong eval --task-dir`` prints
that folder, for ``TaskManager(include_path=...)`` in Python.
"""

from __future__ import annotations

import argparse
import sys

HELP = "run lm-eval with the longbench_sealong / sealong_synth tasks included"


def register(subparsers: argparse._SubParsersAction) -> None:
    # prefix_chars="+" lets every "-x"/"--xx" option fall through to lm-eval.
    parser = subparsers.add_parser(
        "eval",
        help=HELP,
        description=HELP + " (all arguments are passed to lm_eval; "
        "--task-dir prints the task folder)",
        prefix_chars="+",
        add_help=False,
    )
    parser.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from axolotl_sealong.integrations.lm_eval import discovery

    forwarded = list(args.lm_eval_args)
    if forwarded and forwarded[0] == "--":
        forwarded = forwarded[1:]
    if forwarded == ["--task-dir"]:
        print(discovery.task_dir())
        return 0
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError as err:
        raise FileNotFoundError(
            f"lm-eval is not importable ({err}): pip install 'lm-eval>=0.4.11'"
        ) from None
    saved = sys.argv
    sys.argv = ["lm-eval", *discovery.lm_eval_argv(forwarded)]
    try:
        cli_evaluate()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0
