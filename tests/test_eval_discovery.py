"""Discovery from the built wheel in a fresh venv, with no --include_path.

The venv gets lm-eval itself (``--no-deps``, from PyPI) and the wheel; lm-eval's
dependencies come from this venv through a ``.pth`` line appended after the
fresh site-packages, so lm-eval and the task folder share one site-packages
exactly as after ``pip install axolotl-sealong``. Skips when PyPI is unreachable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


# PYTHONPATH would put a source checkout ahead of the installed package
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
ENV.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    # build from a copy: setuptools writes build/ and *.egg-info into the source
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("axolotl_sealong", "lm_eval_tasks", "recipes"):
        shutil.copytree(
            REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    proc = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out), str(src)]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("axolotl_sealong-*.whl")
    return whl


def test_wheel_contents(wheel: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    tasks = [n for n in names if n.startswith("lm_eval/")]
    assert "lm_eval/tasks/longbench_sealong/_template_yaml" in tasks
    assert "lm_eval/tasks/longbench_sealong/README.md" in tasks
    assert "lm_eval/tasks/longbench_sealong/utils.py" in tasks
    assert len([n for n in tasks if n.endswith(".yaml")]) == 8
    # only our folder: nothing that would shadow or replace lm-eval's own files
    assert all(n.startswith("lm_eval/tasks/longbench_sealong/") for n in tasks)
    (ep,) = [n for n in names if n.endswith("entry_points.txt")]
    entry_points = zipfile.ZipFile(wheel).read(ep).decode()
    assert "[lm_eval.tasks]\nlongbench_sealong = lm_eval.tasks.longbench_sealong" in (
        entry_points
    )
