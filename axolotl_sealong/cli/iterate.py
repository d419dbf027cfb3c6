"""`sealong iterate --config RECIPE.yml --out DIR --rounds R`: round after round."""

from __future__ import annotations

import argparse
import shlex
import sys
import typing
from pathlib import Path
from typing import Any

HELP = (
    "SEALONG rounds on any recipe: round r labels with the model of round r-1 "
    "(axolotl preprocess), trains (axolotl train), merges the LoRA and evaluates "
    "with the lm-eval tasks you name; resumable per stage; round policies against "
    "the collapse of later rounds; writes DIR/report.md and report.json"
)


def add_policy_flags(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """One flag per :class:`~axolotl_sealong.iterate.policy.RoundPolicy` field.

    The field's description is the help; ``defaults`` (a RoundPolicy) gives the
    defaults. A bool is ``--x / --no-x``; a choice shows its values but is
    checked by the policy, whose error names the flag, the value and the fix.
    """
    from axolotl_sealong.iterate.policy import RoundPolicy, choices, flag

    group = parser.add_argument_group("round policies")
    for name, field in RoundPolicy.model_fields.items():
        value = getattr(defaults, name)
        text = f"{field.description} (default: {value})"
        if field.annotation is bool:  # --x / --no-x: bool("False") is True
            group.add_argument(
                flag(name),
                action=argparse.BooleanOptionalAction,
                default=value,
                help=text,
            )
            continue
        values = choices(name)
        group.add_argument(
            flag(name),
            type=type(values[0]) if values else typing.cast(Any, field.annotation),
            default=value,
            metavar="{" + ",".join(values) + "}" if values else None,
            help=text,
        )


def print_stop(report: dict[str, Any]) -> None:
    """The early stop, on the terminal too: the result is an earlier round's."""
    stopped = report.get("stopped")
    if stopped:
        print(
            f"round {stopped['round']}: stopped before labeling ({stopped['stopped']}"
            f"); the result is round {stopped['result_round']}'s model"
        )


def policy_from_args(args: argparse.Namespace) -> Any:
    from axolotl_sealong.iterate.policy import RoundPolicy

    return RoundPolicy(
        **{name: getattr(args, name) for name in RoundPolicy.model_fields}
    )


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of self-improvement; rerunning with more only runs the new "
        "ones (default 1)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="forget the finished stages in --out"
    )
    parser.add_argument(
        "--from-run",
        type=Path,
        help="take eval_0 and rounds 1..R-1 from this finished run (same settings "
        "but the policies) and run rounds R.. here: compare policies from round R "
        "without redoing the rounds they share",
    )
    parser.add_argument("--from-round", type=int, default=0, help="R for --from-run")


def register(subparsers: argparse._SubParsersAction) -> None:
    from axolotl_sealong.iterate.policy import RoundPolicy

    parser = subparsers.add_parser("iterate", help=HELP, description=HELP)
    parser.add_argument(
        "--config",
        required=True,
        type=Path,
        help="an Axolotl recipe with plugins: [axolotl_sealong.SeaLongPlugin] and a "
        "datasets: entry of type axolotl_sealong.self_label (the question pool)",
    )
    add_run_flags(parser)
    ev = parser.add_argument_group("evaluation (lm-eval after every round)")
    ev.add_argument(
        "--eval-tasks",
        default="",
        help="comma-separated lm-eval tasks (e.g. sealong_synth or "
        "longbench_sealong); empty: no evaluation",
    )
    ev.add_argument(
        "--eval-model-args",
        default="",
        help="added to --model_args after pretrained=... (e.g. dtype=bfloat16)",
    )
    ev.add_argument(
        "--eval-args",
        default="",
        help="more lm_eval arguments, one string; write it with = (e.g. "
        "--eval-args='--apply_chat_template "
        "--batch_size 8 --limit 300')",
    )
    ev.add_argument(
        "--eval-metric",
        default="sub_em",
        help="per-question metric in lm-eval's samples files for the paired "
        "intervals (default sub_em)",
    )
    parser.add_argument(
        "--merge-dtype",
        default="auto",
        help="dtype the LoRA is merged in: auto (the checkpoint's), float32, "
        "bfloat16, float16",
    )
    parser.add_argument(
        "--launcher",
        default="auto",
        help="axolotl train launcher: auto (python on a CPU, axolotl's default "
        "with CUDA), python, accelerate",
    )
    add_policy_flags(parser, RoundPolicy())
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from axolotl_sealong.iterate.commands import EvalSettings
    from axolotl_sealong.iterate.run import run_iterate

    evals = EvalSettings(
        tasks=tuple(t.strip() for t in args.eval_tasks.split(",") if t.strip()),
        model_args=args.eval_model_args,
        args=tuple(shlex.split(args.eval_args)),
        metric=args.eval_metric,
    )
    command = shlex.join(["sealong", *sys.argv[1:]]) if sys.argv[1:] else "sealong"
    report = run_iterate(
        args.config,
        args.out,
        policy_from_args(args),
        evals,
        rounds=args.rounds,
        fresh=args.fresh,
        from_run=args.from_run,
        from_round=args.from_round,
        merge_dtype=args.merge_dtype,
        launcher=args.launcher,
        command=command,
    )
    for task, rows in (report.get("tasks") or {}).items():
        line = " -> ".join(f"{r['subem']:.1f}" for r in rows)
        print(f"{task}: {line} (before, then per round)")
    print_stop(report)
    print(f"report: {args.out / 'report.md'}")
    return 0
