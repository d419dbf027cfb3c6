"""`sealong label`: run the self-labeling pipeline outside Axolotl."""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any

from axolotl_sealong.core.config import YAML_PREFIX, LabelConfig

PLUGIN_STRATEGY = "axolotl_sealong.self_label"


def _flag_type(annotation: Any) -> tuple[Any, list[Any] | None]:
    """argparse type and choices for a pydantic field annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _flag_type(inner[0])
    if typing.get_origin(annotation) is typing.Literal:
        return type(args[0]), list(args)
    if annotation is bool:
        return _parse_bool, None
    return annotation, None


def _parse_bool(text: str) -> bool:
    """``--flag true/false`` (argparse's ``type=bool`` reads "false" as True)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per LabelConfig field, help text from its description."""
    group = parser.add_argument_group(
        "settings (each is also a YAML key with the sealong_ prefix)"
    )
    for name, info in LabelConfig.model_fields.items():
        kind, choices = _flag_type(info.annotation)
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            choices=choices,
            default=None,
            help=f"{info.description} [default: {info.default}]",
        )


def load_recipe(path: str) -> dict[str, Any]:
    """An Axolotl YAML as a mapping; every way it can be unreadable is named."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"--config {path}: no such file (an Axolotl YAML with base_model and "
            "sealong_* keys)"
        )
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path}: not valid YAML ({err})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(
            f"--config {path}: the YAML is a {type(raw).__name__}, not a mapping of "
            "keys (base_model:, datasets:, sealong_*:): is this an Axolotl recipe?"
        )
    return raw


def config_from_args(
    args: argparse.Namespace,
) -> tuple[LabelConfig, dict[str, Any] | None]:
    """Settings from the recipe (if any) as the plugin reads them, flags winning.

    Flags are written into the recipe as ``sealong_*`` keys before it is read,
    so ``--model`` also decides the default ``max_model_len`` (recipe.label_config,
    the plugin's own function). Returns the settings and the recipe (or None).
    """
    flags = {
        name: getattr(args, name)
        for name in LabelConfig.model_fields
        if getattr(args, name, None) is not None
    }
    if not getattr(args, "config", None):
        return LabelConfig(**flags), None
    from axolotl_sealong.integrations.axolotl.recipe import label_config

    raw = load_recipe(args.config)
    merged = {**raw, **{YAML_PREFIX + k: v for k, v in flags.items()}}
    return label_config(merged), raw


def questions_from_args(
    args: argparse.Namespace, recipe: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """``--data``, else every self-label dataset of ``--config`` (the plugin's way)."""
    from axolotl_sealong.core.pipeline import read_rows

    if args.data:
        rows = read_rows(args.data)
        if not rows:
            raise ValueError(f"--data {args.data}: the file has no rows")
        return rows
    if recipe is not None:
        from axolotl_sealong.integrations.axolotl.recipe import read_questions

        return read_questions(recipe, base_dir=Path(args.config).resolve().parent)
    raise ValueError(
        "no data: pass --data PATH (jsonl, json or parquet with context, "
        f"question and optional answers), or a --config whose datasets: entry "
        f"has type: {PLUGIN_STRATEGY}"
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from axolotl_sealong.core.config import describe_validation_error
    from axolotl_sealong.core.diagnostics import format_table
    from axolotl_sealong.core.pipeline import label

    try:
        cfg, recipe = config_from_args(args)
    except ValidationError as err:
        raise ValueError(describe_validation_error(err)) from None
    rows = questions_from_args(args, recipe)
    result = label(cfg, rows, args.out, progress=not args.no_progress)
    print(format_table(result.diagnostics["subem"]))
    print(json.dumps({"counts": result.counts, "out": str(result.out_dir)}, indent=2))
    return 0


def register(sub: Any) -> None:
    from axolotl_sealong.core.pipeline import (
        DIAGNOSTICS_FILE,
        PREFERENCE_FILE,
        SCORED_FILE,
        SFT_FILE,
    )

    parser = sub.add_parser(
        "label",
        help="sample, MBR-score and write SFT / preference rows",
        description=(
            "Self-label long-context questions: N samples per question from the "
            "model itself, Minimum Bayes Risk scores, chosen = consensus, rejected "
            f"= a low-scoring sample. Writes {SFT_FILE}, {PREFERENCE_FILE}, "
            f"{SCORED_FILE} and {DIAGNOSTICS_FILE} to --out. Samples are cached and "
            "a killed run resumes where it stopped."
        ),
    )
    parser.add_argument("--data", help="questions: .jsonl, .json or .parquet")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--config", help="an Axolotl YAML: reads base_model and the sealong_* keys"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(parser)
    parser.set_defaults(func=run)
