"""The wheel carries every subpackage and the recipes: the slow half (models, end-to-
end runs); the fast half is tests/test_packaging.py.
"""

from __future__ import annotations

import sys
import zipfile

from test_packaging import ROOT


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
