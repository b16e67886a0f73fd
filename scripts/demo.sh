#!/usr/bin/env bash
# The main job on the embedded default: installs what is needed (scripts/setup.sh), then generates a small synthetic
# dataset with the shipped cascade into ./synthetic (image + label TIFF pairs, manifest.json, preview.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/cellcascade generate default --n 4 --size 192 192 --cells 18-22 --clustering 0.3 --seed 0 \
    --out synthetic --overwrite "$@"
