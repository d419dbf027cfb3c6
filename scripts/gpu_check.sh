#!/usr/bin/env bash
# The GPU check, for a bare CUDA machine: torch and transformers are enough (no
# network, no axolotl, no vLLM, no pydantic): it runs the hf engine from this
# checkout at Llama-3.1-8B's shape with random weights in bf16 (see
# axolotl_sealong/bench/gpu_check.py), and writes one JSON. About 3-6 minutes on an H100.
#   bash scripts/gpu_check.sh [OUT_JSON] [--dry-run] [--budget-s S] ...
# --dry-run: a tiny config on the CPU (what the test suite runs).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.json}
shift $(( $# > 0 ? 1 : 0 ))
PY=${PYTHON:-python3}
"$PY" - <<'PY'
import importlib.util
import sys

missing = [m for m in ("torch", "transformers", "tokenizers", "numpy", "safetensors")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: this python lacks {', '.join(missing)}")
PY
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m axolotl_sealong.bench.gpu_check \
    --out "$OUT" "$@"
