"""`sealong demo --out DIR`: self-label, train, evaluate the embedded model on a CPU."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

HELP = (
    "the whole method on the embedded SmolLM2-135M, offline: synthetic data, "
    "lm-eval before, axolotl preprocess (self-label) + train (ORPO + LoRA), "
    "lm-eval after, per round; writes DIR/report.md, report.json and PNGs"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from axolotl_sealong.cli.iterate import add_policy_flags
    from axolotl_sealong.demo.run import DEMO_POLICY, DemoSettings

    parser = subparsers.add_parser("demo", help=HELP, description=HELP)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="self-improvement rounds: each labels with the previous round's model "
        "and trains again (default 1). Rerunning with more rounds only runs the "
        "new ones",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="forget the finished stages in --out and start over",
    )
    parser.add_argument(
        "--from-run",
        type=Path,
        help="take eval_0 and rounds 1..R-1 from this finished demo run (same "
        "settings but the round policies) and run rounds R.. here",
    )
    parser.add_argument("--from-round", type=int, default=0, help="R for --from-run")
    defaults = DemoSettings()
    for field in dataclasses.fields(DemoSettings):
        value = getattr(defaults, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(value),
            default=value,
            help=f"(default: {value})",
        )
    add_policy_flags(parser, DEMO_POLICY)
    for action in parser._actions:
        if action.dest == "questions_per_round":
            action.default = None  # fresh questions, --num-train of them
            action.help = (
                "fresh questions: round r labels the next --num-train questions of "
                "the pool (default); 0: the same questions every round"
            )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from axolotl_sealong.cli.iterate import policy_from_args, print_stop
    from axolotl_sealong.demo.run import DemoSettings, run_demo

    settings = DemoSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoSettings)}
    )
    command = shlex.join(["sealong", *sys.argv[1:]]) if sys.argv[1:] else "sealong demo"
    if args.questions_per_round is None:
        args.questions_per_round = settings.num_train
    report = run_demo(
        args.out,
        settings,
        policy=policy_from_args(args),
        rounds=args.rounds,
        fresh=args.fresh,
        from_run=args.from_run,
        from_round=args.from_round,
        command=command,
    )
    split = "held-out" if settings.eval_split == "eval" else "dev-split"
    print_stop(report)
    print(
        f"{split} SubEM {report['before']:.1f} -> {report['after']:.1f} "
        f"(gain {report['gain']:+.1f}, 95% CI {report['gain_ci95'][0]:+.1f} to "
        f"{report['gain_ci95'][1]:+.1f}, n={report['n_eval']}); "
        f"report: {args.out / 'report.md'}"
    )
    return 0
