#!/usr/bin/env bash
# The GPU check, for a bare CUDA machine (no network), in two parts, one JSON:
# 1. hf part (torch and transformers are enough: no axolotl, vLLM or pydantic):
#    the hf engine from this checkout at Llama-3.1-8B's shape with random weights
#    in bf16 (axolotl_sealong/bench/gpu_check.py): greedy/seeded checks, N=32 vs
#    N=1 from a 16K-token prompt. --budget-s S (default 180): remaining timed
#    runs are skipped after S seconds. 60-90 s on an H200 (2026-11-26).
# 2. training stage (axolotl_sealong/bench/gpu_train.py): a real `axolotl train`
#    of the ORPO recipe with our plugin and its ResponseNLLORPOTrainer on the
#    same random model (LoRA r=128 in bf16, gradient checkpointing, micro batch
#    1), max_steps 2 at sequence_len 16384 and 32768: seconds per step, peak GPU
#    memory, tokens per row, attention implementation, versions, out of memory
#    or not, under "train" in the same JSON. The image lacks axolotl, TRL,
#    datasets, pydantic and more: when axolotl does not import, this script
#    installs .whl/gpu_wheels.tar.xz (made by scripts/gpu_wheels.sh on a machine
#    with network, 43.9 MiB; carry it) offline into .whl/site-pyX.Y, put on
#    PYTHONPATH; the image's torch/transformers/accelerate/peft stay in use.
#    numba (llvmlite: 60 MB) does not travel: scripts/gpu_standins/numba stands
#    in for it (sample packing only, unused by RL; it refuses every call).
#    --train-budget-s S (default 270): a length not started within S seconds of
#    the stage's start is skipped, a running one is stopped at S.
# The default budgets are meant to keep the whole check under ~9 minutes on an
# H100. The training stage has NOT yet run on a GPU (written and tested on a CPU
# only, 2026-12-06: --dry-run, also in a simulation of the bare image).
#   bash scripts/gpu_check.sh [OUT_JSON] [--dry-run] [--no-train | --train-only]
#        [--budget-s S] [--dtype D] [--prompt-tokens T] [--n N] [--new-tokens T]
#        [--train-budget-s S] [--train-seq-lens 16384,32768] [--train-steps 2]
#        [--workdir DIR (kept: the model and the training runs)]
# --dry-run: tiny config on the CPU, float32, short sequences (the test suite).
# SEALONG_GPU_WHEELS=path overrides the wheel archive; PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=gpu_check.json
if [ $# -gt 0 ] && [[ $1 != --* ]]; then OUT=$1; shift; fi
PY=${PYTHON:-python3}
HF=1
TRAIN=1
DRY=()
HF_ARGS=()
TRAIN_ARGS=()  # gpu_train's --budget-s default: 270
WORKDIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=(--dry-run) ;;
        --no-train) TRAIN=0 ;;
        --train-only) HF=0 ;;
        --train-budget-s) TRAIN_ARGS+=(--budget-s "$2"); shift ;;
        --train-seq-lens) TRAIN_ARGS+=(--seq-lens "$2"); shift ;;
        --train-steps) TRAIN_ARGS+=(--steps "$2"); shift ;;
        --workdir) WORKDIR=$2; shift ;;
        *) HF_ARGS+=("$1") ;;
    esac
    shift
done
"$PY" - <<'PY'
import importlib.util
import sys

missing = [m for m in ("torch", "transformers", "tokenizers", "numpy", "safetensors")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: this python lacks {', '.join(missing)}")
PY
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
KEEP=1
if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/sealong_gpu_check.XXXXXX")
    KEEP=0
fi
cleanup() { if [ "$KEEP" = 0 ]; then rm -rf "$WORKDIR"; fi; }
trap cleanup EXIT
rm -f "$OUT"
status=0
if [ "$HF" = 1 ]; then
    # the random model is kept in WORKDIR/model for the training stage
    "$PY" -m axolotl_sealong.bench.gpu_check --out "$OUT" --workdir "$WORKDIR/model" \
        ${DRY[@]+"${DRY[@]}"} ${HF_ARGS[@]+"${HF_ARGS[@]}"} || status=$?
fi
if [ "$TRAIN" = 1 ]; then
    ARCHIVE=${SEALONG_GPU_WHEELS:-.whl/gpu_wheels.tar.xz}
    if ! "$PY" -c "import axolotl" 2>/dev/null && [ -f "$ARCHIVE" ]; then
        PYV=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        SITE="$(cd "$(dirname "$ARCHIVE")" && pwd)/site-py$PYV"
        echo "gpu_check: installing the wheels of $ARCHIVE into $SITE" >&2
        "$PY" -m axolotl_sealong.bench.wheels install "$ARCHIVE" "$SITE" >/dev/null
        export PYTHONPATH="$PYTHONPATH:$SITE"
        export SEALONG_GPU_WHEELS_INSTALLED="$SITE/SEALONG_INSTALLED.json"
    fi
    "$PY" -m axolotl_sealong.bench.gpu_train --out "$OUT" --model "$WORKDIR/model" \
        --workdir "$WORKDIR/train" ${DRY[@]+"${DRY[@]}"} "${TRAIN_ARGS[@]}" \
        || status=$?
fi
exit "$status"
