"""Find the shipped recipes, from an installed wheel or a source checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

DEEPSPEED_PREFIX = "recipes/deepspeed/"


def recipes_dir() -> Path:
    """``axolotl_sealong/recipes`` in a wheel; the repo's ``recipes/`` from source."""
    # Not importlib.resources: the recipes folder has no __init__.py, so in a
    # wheel it is a namespace package whose files() is a MultiplexedPath, and
    # str() of that is not a path.
    here = Path(__file__).resolve().parents[2]  # axolotl_sealong/
    path = here / "recipes"
    if not path.is_dir():
        path = here.parent / "recipes"
    if not path.is_dir():
        raise FileNotFoundError(
            f"no recipes folder at {path}: reinstall axolotl-sealong"
        )
    return path


def list_recipes() -> dict[str, str]:
    """Recipe name -> its first comment line (what it is)."""
    out = {}
    for path in sorted(recipes_dir().glob("*.yml")):
        first = next(
            (ln for ln in path.read_text().splitlines() if ln.startswith("#")), "#"
        )
        out[path.stem] = first.lstrip("# ").strip()
    return out


def copy_recipe(name: str, dest: Path) -> list[Path]:
    """Copy one recipe (or ``all``) and the DeepSpeed configs it names into ``dest``.

    A ``deepspeed: recipes/deepspeed/...`` path is rewritten to the copy, so the
    recipe works from any working directory.
    """
    src_dir = recipes_dir()
    names = list(list_recipes()) if name == "all" else [name.removesuffix(".yml")]
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for stem in names:
        src = src_dir / f"{stem}.yml"
        if not src.is_file():
            raise FileNotFoundError(
                f"no recipe {stem!r}: choose one of {', '.join(list_recipes())} or all"
            )
        text = src.read_text()
        if DEEPSPEED_PREFIX in text:
            ds_dest = dest / "deepspeed"
            shutil.copytree(src_dir / "deepspeed", ds_dest, dirs_exist_ok=True)
            text = text.replace(DEEPSPEED_PREFIX, f"{ds_dest.resolve()}/")
        target = dest / src.name
        target.write_text(text)
        written.append(target)
    return written
