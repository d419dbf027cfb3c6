#!/usr/bin/env bash
# Which vLLM releases resolve beside this package (axolotl 0.19) in ONE
# environment? Resolves pyproject.toml's dependencies plus vllm==X for each
# release with uv (metadata only: nothing is downloaded but index pages and
# wheel metadata), for Linux x86_64 with glibc 2.35 (Ubuntu 22.04; override
# with PLATFORM) and Python 3.12 (PYVER). vLLM and torch from wheels only: a
# vLLM that would have to be built from its sdist does not count.
# Prints one line per release: "ok torch=... transformers=..." or "fail <why>".
# The [vllm] extra's range in pyproject.toml comes from this script's output.
# usage: scripts/check_vllm_range.sh [VERSION ...]   (default: 0.17.0 .. newest)
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
PLATFORM=${PLATFORM:-x86_64-manylinux_2_35}
WHEELS=(--only-binary vllm --only-binary torch)
UV=${UV:-$(command -v uv || true)}
if [ -z "$UV" ]; then
    # a throwaway venv just for uv
    TMPV=$(mktemp -d)
    trap 'rm -rf "$TMPV"' EXIT
    python3 -m venv "$TMPV/v"
    "$TMPV/v/bin/python" -m pip install -q --disable-pip-version-check uv
    UV="$TMPV/v/bin/uv"
fi
if [ $# -gt 0 ]; then
    VERSIONS=("$@")
else
    mapfile -t VERSIONS < <(python3 - <<'PY'
import json
import urllib.request

with urllib.request.urlopen("https://pypi.org/pypi/vllm/json", timeout=60) as r:
    releases = json.load(r)["releases"]


def key(v):
    return [int(p) if p.isdigit() else -1 for p in v.split(".")]


for v in sorted(releases, key=key):
    if key(v) >= [0, 17, 0] and all(p.isdigit() for p in v.split(".")):
        print(v)
PY
)
fi
# the x86_64 wheel's platform tag per release (its glibc floor), from the index
TAGS=$(curl -fsS -H "Accept: application/vnd.pypi.simple.v1+json" \
    https://pypi.org/simple/vllm/ | python3 -c '
import json, re, sys
for f in json.load(sys.stdin)["files"]:
    m = re.match(r"vllm-([\d.]+)(?:-\d+)?-cp\w+-abi3-(manylinux_\d+_\d+)_x86_64\.whl", f["filename"])
    if m:
        print(m.group(1), m.group(2))
' | sort -u) || TAGS=""
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" ${TMPV:+"$TMPV"}' EXIT
echo "# $(date -u +%F) uv $("$UV" --version | cut -d' ' -f2), python $PYVER, $PLATFORM, vllm and torch as wheels, pyproject.toml [base deps] + vllm==X"
for v in "${VERSIONS[@]}"; do
    echo "vllm==$v" > "$WORK/c.txt"
    rm -f "$WORK/out.txt"  # uv pip compile prefers what an existing -o file pins
    # the base dependencies only: the [vllm] extra is what we are choosing
    if "$UV" pip compile pyproject.toml "$WORK/c.txt" --python-version "$PYVER" \
        --python-platform "$PLATFORM" "${WHEELS[@]}" --no-header --quiet -o "$WORK/out.txt" >"$WORK/err.txt" 2>&1; then
        pins=$(grep -E '^(torch|transformers|trl)==' "$WORK/out.txt" | tr '\n' ' ')
        tag=$(echo "$TAGS" | awk -v v="$v" '$1 == v {print $2}' | head -1)
        echo "vllm $v: ok $pins(x86_64 wheel: ${tag:-?})"
    else
        why=$(grep -E "depends on|requires|conflict|unsatisfiable|no version" "$WORK/err.txt" \
            | head -2 | tr -s ' ' | tr '\n' ' ' | cut -c1-300)
        echo "vllm $v: fail ${why:-$(tail -1 "$WORK/err.txt")}"
    fi
done
# and the [vllm] extra as pyproject.toml declares it
rm -f "$WORK/out.txt"
if "$UV" pip compile pyproject.toml --extra vllm --python-version "$PYVER" \
    --python-platform "$PLATFORM" "${WHEELS[@]}" --no-header --quiet -o "$WORK/out.txt" \
    >"$WORK/err.txt" 2>&1; then
    pins=$(grep -E '^(vllm|torch|transformers|trl)==' "$WORK/out.txt" | tr '\n' ' ')
    echo "extra [vllm] ($(grep -o '"vllm[^"]*"' pyproject.toml | tail -1)): ok $pins"
else
    echo "extra [vllm]: fail $(tail -3 "$WORK/err.txt" | tr '\n' ' ')"
fi
