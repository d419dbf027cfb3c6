#!/usr/bin/env bash
# Install (scripts/setup.sh), then run SEALONG on the embedded default, offline:
# SmolLM2-135M-Instruct self-labels synthetic long-context multi-hop questions,
# scored by MBR with all-MiniLM-L6-v2. Output in ${OUT:-runs/demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${SEALONG_VENV:-.venv}
OUT=${OUT:-runs/demo}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1
"$VENV/bin/sealong" data synth --out "$OUT/data/synth_train.jsonl" --split train \
    --num "${NUM:-16}" --seed 0 --min-tokens 512 --max-tokens 1024
"$VENV/bin/sealong" label --data "$OUT/data/synth_train.jsonl" --out "$OUT/labeled" \
    --model embedded:smollm2-135m-instruct --num-samples "${N:-4}" \
    --max-new-tokens 128 --dtype float32 --seed 0
echo "self-labeled rows and diagnostics: $OUT/labeled"
