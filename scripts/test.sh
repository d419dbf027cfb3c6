#!/usr/bin/env bash
# Install (scripts/setup.sh), then lint, type-check and run the test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${SEALONG_VENV:-.venv}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1
"$VENV/bin/ruff" check axolotl_sealong tests
"$VENV/bin/ruff" format --check axolotl_sealong tests
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest -q "$@"
