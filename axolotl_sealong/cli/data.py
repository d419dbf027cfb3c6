"""``sealong data synth|musique``: build long-context training / eval data.

Both write ``--out`` (``.jsonl`` or ``.parquet``) plus ``<name>.card.md`` next
to it. Heavy imports (transformers, datasets) stay inside the handlers.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from typing import Any

LOG = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "data",
        help="build long-context data (MuSiQue or synthetic multi-hop)",
        description=(
            "Build long-context multi-hop QA rows (context, question, answers, "
            "num_tokens) at target token lengths of the target model's tokenizer."
        ),
    )
    sub = parser.add_subparsers(dest="data_command", metavar="KIND", required=True)

    synth = sub.add_parser(
        "synth",
        help="synthetic multi-hop questions over fictional entities",
        description=(
            "Fictional-entity multi-hop questions with near-miss decoy passages, "
            "padded with distractors to a target length. Train and eval splits "
            "use disjoint entity names."
        ),
    )
    _common(synth, min_tokens=1024, max_tokens=4096)
    synth.add_argument("--split", choices=("train", "eval"), default="train")
    synth.add_argument(
        "--hops", default="2-4", help="hops per question: N or LO-HI (default 2-4)"
    )
    synth.add_argument(
        "--distractors",
        type=int,
        default=2,
        help=(
            "near-miss decoy chains per question, each mirroring the supporting "
            "passages (default 2); generic distractors fill the rest of the length"
        ),
    )
    synth.set_defaults(func=run_synth)

    musique = sub.add_parser(
        "musique",
        help="MuSiQue-Ans questions in long contexts, as in the paper",
        description=(
            "Supporting paragraphs always, then the question's own distractors, "
            "then paragraphs of other questions (or full Wikipedia articles with "
            "--wiki), up to a random target length per row."
        ),
    )
    musique.add_argument(
        "--source",
        required=True,
        help="MuSiQue-Ans: a local .jsonl/.json/.parquet (.gz ok) or an HF dataset id",
    )
    musique.add_argument("--source-split", default="train", help="HF split (train)")
    musique.add_argument("--source-config", default=None, help="HF config name")
    _common(musique, min_tokens=4096, max_tokens=31 * 1024)
    musique.add_argument(
        "--wiki",
        default=None,
        help=(
            "use full Wikipedia articles as documents (paper): an HF id such as "
            "wikimedia/wikipedia (streamed) or a local .jsonl/.parquet with "
            "title and text"
        ),
    )
    musique.add_argument(
        "--wiki-config",
        default=None,
        help="HF config of --wiki (20231101.en for wikimedia/wikipedia)",
    )
    musique.add_argument("--wiki-split", default="train")
    titles = musique.add_mutually_exclusive_group()
    titles.add_argument(
        "--titles",
        dest="titles",
        action="store_true",
        default=None,
        help="put each document's title on its first line (default for paragraphs)",
    )
    titles.add_argument(
        "--no-titles",
        dest="titles",
        action="store_false",
        help="document text only (default with --wiki, as in the paper)",
    )
    musique.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help=(
            "distractor documents of other questions kept in memory "
            "(default 20000 paragraphs, or 1000 articles with --wiki)"
        ),
    )
    musique.set_defaults(func=run_musique)


def _common(parser: argparse.ArgumentParser, min_tokens: int, max_tokens: int) -> None:
    parser.add_argument("--out", required=True, help="output file: .jsonl or .parquet")
    parser.add_argument("--num", type=int, required=True, help="rows to build")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tokenizer",
        default="embedded:smollm2-135m-instruct",
        help="tokenizer that counts tokens: local path, HF id or embedded:* name",
    )
    parser.add_argument(
        "--min-tokens",
        type=int,
        default=min_tokens,
        help=f"shortest target context length in tokens (default {min_tokens})",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=max_tokens,
        help=f"longest target context length in tokens (default {max_tokens})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


_NOT_OPTIONS = {"func", "command", "data_command", "verbose"}


def command_line(args: argparse.Namespace) -> str:
    """The command as parsed, defaults included, for the dataset card."""
    parts = ["sealong", "data", args.data_command]
    for key, value in vars(args).items():
        if key in _NOT_OPTIONS or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is False:
            if key == "titles":
                parts.append("--no-titles")
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _finish(rows: list[dict[str, Any]], report: Any, args: argparse.Namespace) -> int:
    from axolotl_sealong.data.card import write_dataset

    out, card = write_dataset(rows, args.out, report, command_line(args))
    print(f"wrote {len(rows)} rows to {out} (card: {card})")
    if report.skipped:
        print(f"skipped: {report.skip_summary()}")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from axolotl_sealong.common.rows import check_output_path
    from axolotl_sealong.data.contexts import load_tokenizer
    from axolotl_sealong.data.synth import build_synth

    check_output_path(args.out)
    counter = load_tokenizer(args.tokenizer)
    rows, report = build_synth(
        num=args.num,
        seed=args.seed,
        split=args.split,
        counter=counter,
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        hops=args.hops,
        distractors=args.distractors,
        progress=not args.no_progress,
    )
    return _finish(rows, report, args)


def run_musique(args: argparse.Namespace) -> int:
    from axolotl_sealong.common.rows import check_output_path
    from axolotl_sealong.data.contexts import load_tokenizer
    from axolotl_sealong.data.musique import build_musique

    check_output_path(args.out)
    counter = load_tokenizer(args.tokenizer)
    rows, report = build_musique(
        args.source,
        num=args.num,
        seed=args.seed,
        counter=counter,
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        split=args.source_split,
        config=args.source_config,
        wiki=args.wiki,
        wiki_split=args.wiki_split,
        wiki_config=args.wiki_config,
        titles=args.titles,
        pool_size=args.pool_size,
        progress=not args.no_progress,
    )
    return _finish(rows, report, args)
