"""Discovery from the built wheel in a fresh venv, with no --include_path: the slow
half (models, end-to-end runs); the fast half is tests/test_eval_discovery.py.
"""

from __future__ import annotations

import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from test_eval_discovery import _run

TESTS = Path(__file__).resolve().parents[1]


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
