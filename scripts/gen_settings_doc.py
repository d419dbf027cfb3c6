"""Write docs/settings.md, the reference of every ``sealong_*`` key, from the config.

The page is generated so it cannot drift from the pydantic models: names, types and
descriptions come from the plugin's settings model (``SeaLongArgs``), defaults and
``sealong label`` flags from ``LabelConfig`` and the CLI's own parser. A test
(tests/test_docs.py) fails when the committed page differs from this output.

    python scripts/gen_settings_doc.py            # rewrite docs/settings.md
    python scripts/gen_settings_doc.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This checkout's package, not an installed copy (scripts/setup.sh installs a wheel).
sys.path.insert(0, str(ROOT))

# The only imports of the package: where the settings live.
from axolotl_sealong.cli.label import add_config_flags  # noqa: E402
from axolotl_sealong.core.config import (  # noqa: E402
    PLUGIN_ONLY_KEYS,
    YAML_PREFIX,
    LabelConfig,
)
from axolotl_sealong.integrations.axolotl.args import SeaLongArgs  # noqa: E402

PAGE = ROOT / "docs" / "settings.md"
COMMAND = "python scripts/gen_settings_doc.py"

HEADER = f"""\
# Settings reference: every `sealong_*` key

Every setting of the plugin and of `sealong label`, generated from the config
models by `{COMMAND}` (do not edit by hand). Back to the
[README](../README.md).

In an Axolotl recipe each setting is a top-level key with the `sealong_` prefix
(`sealong_num_samples: 8`); `sealong label` takes the same settings as flags
(`--num-samples 8`, which override the keys of a `--config` recipe). All of them
are checked before any model loads; a misspelt key is refused with the closest
name. The keys marked *recipe only* decide how Axolotl trains on the labeled
rows and have no flag. Defaults follow the paper; the shipped recipes set the
paper's GPU values explicitly.

"""


def type_name(annotation: Any) -> str:
    """A type as a reader writes it: ``int``, ``one of a, b``, ``str or unset``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return text + " or unset" if type(None) in args else text
    return getattr(annotation, "__name__", str(annotation))


def cli_flags() -> dict[str, str]:
    """Field name -> its ``sealong label`` flag, read from the real parser."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


def render() -> str:
    """The whole page, as committed."""
    flags = cli_flags()
    label_fields = LabelConfig.model_fields
    rows = ["| key | flag | type | default | what |", "|---|---|---|---|---|"]
    for key, info in SeaLongArgs.model_fields.items():
        name = key[len(YAML_PREFIX) :]
        # SeaLongArgs makes every label field optional (unset = LabelConfig's
        # default), so its type and default come from LabelConfig.
        source = label_fields.get(name, info)
        flag = f"`{flags[name]}`" if name in flags else "*recipe only*"
        extra = info.json_schema_extra
        desc = extra.get("description", "") if isinstance(extra, dict) else ""
        cells = [
            f"`{key}`",
            flag,
            type_name(source.annotation),
            "unset" if source.default is None else f"`{source.default}`",
            str(desc or source.description or ""),
        ]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    unflagged = sorted(set(PLUGIN_ONLY_KEYS) - set(flags))
    footer = (
        f"\n{len(rows) - 2} keys; recipe only: "
        + ", ".join(f"`{YAML_PREFIX}{k}`" for k in unflagged)
        + ".\n"
    )
    return HEADER + "\n".join(rows) + "\n" + footer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/settings.md is stale"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
