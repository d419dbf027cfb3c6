#!/usr/bin/env bash
# Install (scripts/setup.sh), then run SEALONG end to end on the embedded default,
# offline, on a CPU: SmolLM2-135M-Instruct self-labels synthetic long-context
# questions (MBR with all-MiniLM-L6-v2), trains ORPO + LoRA with `axolotl train`,
# and is evaluated before and after with lm-eval on a held-out split.
# Output and report in ${OUT:-runs/demo}; extra arguments go to `sealong demo`
# (e.g. --rounds 2). A killed run resumes: run the same command again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${SEALONG_VENV:-.venv}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1
"$VENV/bin/sealong" demo --out "${OUT:-runs/demo}" "$@"
