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
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
SEALONG_TASKS = {
    "longbench_sealong",
    "longbench_sealong_qasper",
    "longbench_sealong_multifieldqa_en",
    "longbench_sealong_hotpotqa",
    "longbench_sealong_musique",
    "longbench_sealong_2wikimqa",
    "longbench_sealong_narrativeqa",
    "sealong_synth",
}

CHECK = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])  # tests/, for eval_support only
    os.environ["SEALONG_LONGBENCH_DIR"] = sys.argv[2]
    import axolotl_sealong
    from axolotl_sealong.integrations.lm_eval import discovery
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from eval_support import GROUP_EXPECTED, FakeLM

    assert axolotl_sealong.__file__.startswith(sys.prefix), axolotl_sealong.__file__
    assert discovery.found_by_default(), discovery.task_dir()
    res = simple_evaluate(
        model=FakeLM(), tasks=["longbench_sealong"], task_manager=TaskManager()
    )
    row = res["results"]["longbench_sealong"]
    got = (row["sub_em,none"], row["sub_em_extracted,none"], row["output_tokens,none"])
    assert all(abs(a - b) < 1e-9 for a, b in zip(got, GROUP_EXPECTED)), got
    print("OK", got)
    """
)


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


@pytest.mark.slow
@pytest.mark.parametrize("version", ["0.4.11", "0.4.13"])
def test_fresh_venv_finds_the_tasks(wheel: Path, tmp_path: Path, version: str) -> None:
    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", str(venv)])
    assert proc.returncode == 0, proc.stderr
    bin_dir = venv / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "--disable-pip-version-check"]
    proc = _run([*pip, "install", "-q", "--no-deps", "--timeout", "30",
                 f"lm-eval=={version}"])  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(
            f"cannot install lm-eval=={version} from PyPI: {proc.stderr[-300:]}"
        )
    proc = _run([*pip, "install", "-q", "--no-deps", str(wheel)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    site = Path(
        _run([str(bin_dir / "python"), "-c", "import sysconfig; "
              "print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )  # fmt: skip
    assert (site / "lm_eval/tasks/longbench_sealong/_template_yaml").is_file()
    assert not (site / "lm_eval/tasks/longbench_sealong/__init__.py").exists()
    deps = sysconfig.get_paths()["purelib"]
    (site / "zz_sealong_test_deps.pth").write_text(deps + "\n")

    proc = _run([str(bin_dir / "lm_eval"), "ls", "tasks"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [
        cells[1].strip()
        for line in proc.stdout.splitlines()
        if len(cells := line.split("|")) > 2 and "sealong" in cells[1]
    ]
    assert sorted(rows) == sorted(SEALONG_TASKS)  # each exactly once

    proc = _run(
        [str(bin_dir / "python"), "-c", CHECK, str(TESTS),
         str(TESTS / "data" / "eval" / "longbench")],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "OK" in proc.stdout
    version_out = _run(
        [str(bin_dir / "python"), "-c", "import lm_eval, importlib.metadata as m; "
         "print(m.version('lm_eval'), lm_eval.__file__)"]
    ).stdout  # fmt: skip
    assert version_out.startswith(version) and str(site) in version_out

    proc = _run([str(bin_dir / "sealong"), "eval", "--task-dir"])
    assert proc.stdout.strip() == str(site / "lm_eval/tasks/longbench_sealong")

    # the console script, run from outside the checkout, finds the recipes
    # shipped in the wheel (a namespace-package lookup once broke only here)
    proc = _run([str(bin_dir / "sealong"), "recipes", "list"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "smollm2_135m_orpo_cpu" in proc.stdout and "llama31_8b_orpo" in proc.stdout
    dest = tmp_path / "copied"
    proc = _run(
        [str(bin_dir / "sealong"), "recipes", "copy", "smollm2_135m_orpo_cpu",
         str(dest)],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "axolotl_sealong.SeaLongPlugin"
        in (dest / "smollm2_135m_orpo_cpu.yml").read_text()
    )
