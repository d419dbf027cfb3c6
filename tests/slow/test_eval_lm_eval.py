"""The tasks run through lm-eval's own evaluator with a canned-output model: the slow
half (models, end-to-end runs); the fast half is tests/test_eval_lm_eval.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _alt_pythons() -> list[str]:
    value = os.environ.get("SEALONG_TEST_ALT_PYTHONS", "")
    return [p for p in value.split(os.pathsep) if p]


@pytest.mark.parametrize("python", _alt_pythons() or [None])
def test_other_lm_eval_versions(python: str | None) -> None:
    if python is None:
        pytest.skip("set SEALONG_TEST_ALT_PYTHONS to venvs with another lm-eval")
    if not Path(python).exists():
        pytest.skip(f"{python} does not exist")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "SEALONG_TEST_ALT_PYTHONS": ""}
    proc = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(repo / "tests" / "test_eval_lm_eval.py"),
            "-k",
            "not other_lm_eval_versions",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    print(proc.stdout.splitlines()[-1], file=sys.stderr)
