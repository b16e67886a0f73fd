"""Give the cells of an already generated folder their own brightness, as `generate --brightness-spread` does.

For ablations without re-running the texture model (minutes per image on a CPU): every image/mask pair of IN is
written to OUT with each cell's signal above the cascade's background scaled by a log-normal factor
(:func:`cellcascade.imaging.brightness.cell_factor_map`, as `generate` uses it). `generate` scales the texture before the noise is
added; here the noise is already in, so dimmed cells get back the noise they lost (Gaussian, the cascade's fitted
variance ``gain * mean + offset`` times ``1 - factor²``) and brightened ones keep their amplified noise. Image i uses
seed ``--seed + i``.

Usage::

    python benchmarks/vary_brightness.py runs/synthetic-ovl-256 runs/synthetic-ovl-bright03-256 \\
        --cascade benchmarks/cascades/sample-budget --spread 0.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellcascade.errors import CellcascadeError
from cellcascade.imaging import ImagingModel
from cellcascade.imaging.brightness import cell_factor_map
from cellcascade.io.output import rewrite_pairs


def vary_folder(source: Path, out: Path, imaging: ImagingModel, spread: float, seed: int) -> int:
    """Write every ``NAME.tif`` + ``NAME_masks.tif`` pair of `source` to `out` with varied cells; returns the count."""
    background = imaging.background_level

    def vary(index: int, image: np.ndarray, labels: np.ndarray):
        rng = np.random.default_rng(seed + index)
        factor = cell_factor_map(labels, spread=spread, rng=rng)
        varied = background + (image.astype(np.float32) - background) * factor
        # where the factor is below 1 the noise was scaled down with the signal: add back what it lost
        expected = np.maximum(ndi.gaussian_filter(varied, 1.0), 0.0)
        lost = np.clip(1.0 - factor**2, 0.0, None) * (imaging.noise_gain * expected + imaging.noise_offset)
        varied = varied + rng.normal(0.0, 1.0, image.shape) * np.sqrt(lost)
        if image.dtype.kind in "ui":
            info = np.iinfo(image.dtype)
            varied = np.clip(np.rint(varied), info.min, info.max)
        return varied.astype(image.dtype), labels, None

    record = {"source": str(source), "spread": spread, "seed": seed, "background": background,
              "command": " ".join(sys.argv)}
    return len(rewrite_pairs(source, out, vary, record=lambda infos: ("brightness.json", record)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of NAME.tif + NAME_masks.tif pairs (e.g. from generate)")
    parser.add_argument("out", type=Path, help="new folder for the varied pairs (written whole or not at all)")
    parser.add_argument("--cascade", type=Path, required=True,
                        help="the cascade folder that generated SOURCE (its imaging/config.json: background, noise)")
    parser.add_argument("--spread", type=float, default=0.3,
                        help="standard deviation of the log of each cell's factor (default 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default 0)")
    args = parser.parse_args(argv)
    try:
        if not args.spread >= 0:
            raise CellcascadeError(f"--spread must be at least 0, not {args.spread}")
        config = args.cascade / "imaging" / "config.json"
        if not config.is_file():
            raise CellcascadeError(f"{config}: missing (is --cascade a cascade folder?)")
        imaging = ImagingModel.from_dict(json.loads(config.read_text()))
        n = vary_folder(args.source, args.out, imaging, args.spread, args.seed)
    except CellcascadeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{n} pairs written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
