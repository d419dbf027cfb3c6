"""The wheel carries every subpackage and the recipes."""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "axolotl_sealong").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {found - listed}"


@pytest.mark.slow
def test_wheel_ships_recipes(tmp_path):
    import subprocess

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("axolotl_sealong-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in (ROOT / "recipes").glob("*.yml"):
        assert f"axolotl_sealong/recipes/{recipe.name}" in names
    assert "axolotl_sealong/recipes/deepspeed/zero3_bf16.json" in names
    assert "axolotl_sealong/data/README.md" in names
    package = ROOT / "axolotl_sealong"
    for path in [*package.rglob("*.py"), *package.rglob("gpu_check_*.json")]:
        assert path.relative_to(ROOT).as_posix() in names  # every module and data
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "sealong = axolotl_sealong.cli.main:main" in text
