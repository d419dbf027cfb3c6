"""A recipe whose packages are missing stops at config load with our message: the slow
half (models, end-to-end runs); the fast half is tests/test_requirements.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_requirements import ROOT, _absent

from axolotl_sealong.integrations.axolotl.requirements import (
    GPU_EXTRA_INSTALL,
)


def test_axolotl_preprocess_stops_in_seconds_with_our_message(tmp_path):
    """The real command on this machine (no deepspeed): our message, before any
    model or dataset is touched."""
    _absent("deepspeed")
    axolotl = Path(sys.executable).with_name("axolotl")
    if not axolotl.exists():
        pytest.skip("axolotl console script not next to this python")
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    start = time.monotonic()
    proc = subprocess.run(
        [str(axolotl), "preprocess", "recipes/llama31_8b_orpo_8gpu_zero3.yml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "needs the deepspeed package" in log, log[-3000:]
    assert GPU_EXTRA_INSTALL in log
    assert "sealong: self-labeling" not in log  # stopped before labeling
    assert took < 120, took  # import time of axolotl, not a training run
