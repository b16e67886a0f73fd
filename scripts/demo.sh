#!/usr/bin/env bash
# The main job on the embedded default: installs what is needed (scripts/setup.sh), then writes a small synthetic
# dataset with the shipped model into ./synthetic (label TIFFs, manifest.json, preview.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/cellcascade populate default --n 8 --size 256 256 --cells 40-49 --clustering 0.3 --seed 0 \
    --out synthetic --overwrite "$@"
