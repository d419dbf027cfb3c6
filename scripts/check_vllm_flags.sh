#!/usr/bin/env bash
# Parse the vllm_server engine's command lines with the parser of each vLLM
# release named (default: 0.20.0, 0.23.0 and the newest on PyPI), plus the
# vLLM of .venv-vllm. The CUDA wheels cannot run here, but their Python source
# can: each wheel is downloaded (no dependencies), its .py files unpacked into
# a temporary folder and put first on .venv-vllm's path, and
# scripts/check_vllm_flags.py parses with that release's make_arg_parser.
#   bash scripts/check_vllm_flags.sh [0.20.0 0.23.0 ...] > docs/results/compat/vllm_flags.txt
# Needs .venv-vllm (scripts/setup_vllm.sh) and PyPI; about 250 MB per release.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${SEALONG_VLLM_VENV:-.venv-vllm}/bin/python
[ -x "$PY" ] || { echo "build .venv-vllm first: bash scripts/setup_vllm.sh" >&2; exit 2; }
if [ $# -eq 0 ]; then
    newest=$("$PY" -m pip index versions vllm 2>/dev/null | sed -n 's/^vllm (\(.*\))$/\1/p')
    set -- 0.20.0 0.23.0 ${newest:+"$newest"}
fi
# vLLM logs to stdout: keep only the checks' lines
quiet() { grep -v -E '^(INFO|WARNING|DEBUG) [0-9]{2}-[0-9]{2} ' || true; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "# vllm_server's command lines through vLLM's own parser, $(date -u +%Y-%m-%d)"
echo "# command: bash scripts/check_vllm_flags.sh $*"
status=0
for version in "$@"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 \
        "vllm==$version" -d "$WORK/w$version" 2>/dev/null \
        || { echo "vllm $version: download failed"; status=1; continue; }
    "$PY" - "$WORK/w$version" "$WORK/s$version" <<'PY'
import sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith("vllm/") and name.endswith(".py"):
            zf.extract(name, sys.argv[2])
PY
    PYTHONPATH="$WORK/s$version:$PWD" "$PY" scripts/check_vllm_flags.py \
        >"$WORK/out" 2>/dev/null || status=1
    quiet <"$WORK/out"
    rm -rf "$WORK/w$version" "$WORK/s$version"
done
echo "# and the vLLM installed in $PY:"
PYTHONPATH="$PWD" "$PY" scripts/check_vllm_flags.py >"$WORK/out" 2>/dev/null || status=1
quiet <"$WORK/out"
exit $status
