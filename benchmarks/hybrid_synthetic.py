"""Experiment for the segmentation gain (issue 4): classic-simulator label images, textured by the diffusion cascade.

The budget cascade's weak part is its mask model (15 training cells give irregular shapes, see
texture_realism_sample.md), while its texture beats the classic simulator's on KID. This script writes a synthetic
set whose *labels* come from the classic simulator fitted on the budget patch and whose *images* come from the
cascade's texture + imaging stages conditioned on those labels, as TIFF pairs for
``segmentation_benchmark.py --synthetic``.

Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/hybrid_synthetic.py --budget BUDGET --cascade CASCADE --out DIR \
        [--n 32 --size 160 160 --texture-steps 20 --seed 1]

BUDGET is a folder written by ``cellcascade budget``; CASCADE a cascade fitted on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cellcascade.classic import ClassicGenerator
from cellcascade.data import read_pairs
from cellcascade.io.dataset_writer import DatasetWriter
from cellcascade.pipelines.cascade import Cascade, finish_image
from cellcascade.pipelines.labels import sample_seed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=Path, required=True)
    parser.add_argument("--cascade", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=(160, 160))
    parser.add_argument("--texture-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    items = read_pairs(args.budget, dense=json.loads((args.budget / "budget.json").read_text())["dense"])
    classic = ClassicGenerator.fit(items)
    cascade = Cascade.load(args.cascade)
    writer = DatasetWriter(args.out, "tiff", count=args.n)
    for i in tqdm(range(args.n), desc="hybrid"):
        seed = sample_seed(args.seed, i)
        _, labels = classic.generate(tuple(args.size), rng=seed, clustering=0.3)
        texture = cascade.texture(labels, args.texture_steps, generator=torch.Generator().manual_seed(seed + 1)).image
        image = finish_image(texture, cascade.imaging, np.random.default_rng(seed + 2))
        writer.add(i, image, labels)
    (args.out / "hybrid.json").write_text(json.dumps({**{k: str(v) for k, v in vars(args).items()},
                                                      "classic": classic.summary()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
