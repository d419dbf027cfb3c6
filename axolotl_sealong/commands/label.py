"""`sealong label`: run the self-labeling pipeline outside Axolotl."""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any

from axolotl_sealong.config import YAML_PREFIX, LabelConfig

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


def _yaml_data_path(cfg: dict[str, Any], config_path: Path) -> str | None:
    """The first ``datasets:`` entry that the plugin labels."""
    for ds in cfg.get("datasets") or []:
        if ds.get("type") == PLUGIN_STRATEGY:
            path = Path(str(ds.get("data_files") or ds.get("path")))
            if not path.is_absolute() and not path.exists():
                path = config_path.parent / path
            return str(path)
    return None


def config_from_args(args: argparse.Namespace) -> tuple[LabelConfig, str | None]:
    """YAML settings (if any), overridden by flags; plus the data path."""
    values: dict[str, Any] = {}
    data = args.data
    if args.config:
        import yaml

        path = Path(args.config)
        raw = yaml.safe_load(path.read_text()) or {}
        base = LabelConfig.from_yaml_dict(raw)
        values = base.model_dump(exclude_unset=True)
        data = data or _yaml_data_path(raw, path)
    for name in LabelConfig.model_fields:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return LabelConfig(**values), data


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from axolotl_sealong.diagnostics import format_table
    from axolotl_sealong.pipeline import label, read_rows

    try:
        cfg, data = config_from_args(args)
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        raise ValueError(
            f"{name} (--{name.replace('_', '-')} / {YAML_PREFIX}{name}): {first['msg']}"
        ) from None
    if not data:
        raise ValueError(
            "no data: pass --data PATH (jsonl, json or parquet with context, "
            f"question and optional answers), or a --config whose datasets: entry "
            f"has type: {PLUGIN_STRATEGY}"
        )
    result = label(cfg, read_rows(data), args.out, progress=not args.no_progress)
    print(format_table(result.diagnostics["subem"]))
    print(json.dumps({"counts": result.counts, "out": str(result.out_dir)}, indent=2))
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "label",
        help="sample, MBR-score and write SFT / preference rows",
        description=(
            "Self-label long-context questions: N samples per question from the "
            "model itself, Minimum Bayes Risk scores, chosen = consensus, rejected "
            "= a low-scoring sample. Writes sft.jsonl, preference.jsonl, "
            "scored.jsonl and diagnostics.json to --out. Samples are cached and a "
            "killed run resumes where it stopped."
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
