"""``axolotl sealong ...``: the ``sealong`` commands where Axolotl users type.

Axolotl 0.19 serves commands of installed packages from the
``axolotl.cli_commands`` entry-point group (``axolotl/cli/plugins.py``): a
``click.Command``, imported only when used. This one hands every argument to
the ``sealong`` parser unchanged, so ``axolotl sealong check RECIPE.yml`` is
``sealong check RECIPE.yml``.
"""

from __future__ import annotations

import sys

import click


@click.command(
    "sealong",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
    short_help="SEALONG: check, label, data, recipes, eval, iterate (sealong --help)",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sealong(args: tuple[str, ...]) -> None:
    """SEALONG self-labeling commands (`axolotl sealong --help` lists them)."""
    from axolotl_sealong.cli.main import main

    sys.exit(main(list(args), prog="axolotl sealong"))
