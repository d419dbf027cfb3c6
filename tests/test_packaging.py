"""The wheel carries every subpackage and the recipes."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "axolotl_sealong").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {found - listed}"
