#!/usr/bin/env bash
# The wheels the bare GPU image lacks for the GPU check's training stage, packed
# to travel: run it on a machine with network (PyPI), before sending the checkout
# with `.whl/gpu_wheels.tar.xz` as a carried (ignored) path.
#   bash scripts/gpu_wheels.sh [DEST]        # default DEST: .whl
# Downloads scripts/gpu_wheels.txt for CPython 3.12 on manylinux x86_64 (binary
# wheels only, --no-deps; the `[build]` lines are sdists, built here with `pip
# wheel`), then packs them into DEST/gpu_wheels.tar.xz (axolotl_sealong/bench/
# wheels.py: uncompressed wheels in one xz tarball, bitsandbytes and wandb
# trimmed of native payloads the run never loads) and prints every size.
# Measured 2026-12-06: 35 wheels, 133.9 MB as downloaded, 46.0 MB (43.9 MiB) packed.
# What travels (checkout + carried paths) must stay under 64 MiB.
# SEALONG_WHEELS_PYTHON_VERSION=3.11 gets another Python's wheels (the CPU
# simulation of the bare image used that); PYTHON picks the pip that downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PYVER=${SEALONG_WHEELS_PYTHON_VERSION:-3.12}
PY=${PYTHON:-python3}
LIST=scripts/gpu_wheels.txt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
binary=()
built=()
while IFS= read -r line; do
    spec=$(echo "${line%%#*}" | tr -d '[:space:]')
    [ -z "$spec" ] && continue
    if [[ $line == *"[build]"* ]]; then built+=("$spec"); else binary+=("$spec"); fi
done < "$LIST"
mkdir -p "$TMP/wheels"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    -d "$TMP/wheels" "${binary[@]}"
if [ ${#built[@]} -gt 0 ]; then
    "$PY" -m pip wheel --quiet --no-deps -w "$TMP/wheels" "${built[@]}"
fi
count=$(find "$TMP/wheels" -name '*.whl' | wc -l)
want=$(( ${#binary[@]} + ${#built[@]} ))
if [ "$count" -ne "$want" ]; then
    echo "gpu_wheels: $count wheels for $want lines of $LIST" >&2
    exit 1
fi
mkdir -p "$DEST"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m axolotl_sealong.bench.wheels \
    pack "$TMP/wheels" "$DEST/gpu_wheels.tar.xz"
