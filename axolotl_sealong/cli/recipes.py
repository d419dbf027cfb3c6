"""`sealong recipes list|copy`: the shipped recipes, after a plain pip install."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def run_list(args: argparse.Namespace) -> int:
    from axolotl_sealong.integrations.axolotl.recipe_catalog import (
        list_recipes,
        recipes_dir,
    )

    for name, what in list_recipes().items():
        print(f"{name:<32} {what}")
    print(f"\n(from {recipes_dir()})")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    from axolotl_sealong.integrations.axolotl.recipe_catalog import copy_recipe

    for path in copy_recipe(args.name, Path(args.dir)):
        print(f"wrote {path}")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("recipes", help="list or copy the shipped Axolotl recipes")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="names and one-line descriptions")
    ls.set_defaults(func=run_list)
    cp = actions.add_parser(
        "copy",
        help="copy a recipe (or all) into a folder",
        description="Copy NAME.yml (and the DeepSpeed config it uses) into DIR; "
        "then edit it and run `axolotl train DIR/NAME.yml`.",
    )
    cp.add_argument("name", help="recipe name (see `sealong recipes list`) or all")
    cp.add_argument("dir", help="destination folder")
    cp.set_defaults(func=run_copy)
