"""Resize a folder of NAME.tif + NAME_masks.tif pairs so that its cells measure a given diameter.

The default cascade models are sized for cells of about 24 px (the embedded sample): a texture patch of 64 px sees
several whole cells there, but not one whole 60-px GOWT1 nucleus. For such data this script shrinks the annotations
(e.g. a `cellcascade budget` folder) before `cellcascade fit`; the synthetic images then have small cells, which the
segmentation benchmark accepts as they are (Cellpose resizes every training image by its own cell size).

    python benchmarks/rescale_annotations.py BUDGET --out SMALL --diameter 24

Images are resized with anti-aliasing and keep their dtype; labels with nearest neighbour (no new label values).
The diameter is Cellpose's (a disc of the median cell area; the median over pairs). A budget.json beside the pairs
is copied with the factor added.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from skimage.transform import resize

from cellcascade.data.readers import read_pairs
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.segmenters import label_diameter
from cellcascade.io.tiff import write_tiff


def rescale_pair(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize `image` (Y, X; any dtype) and `labels` (Y, X; integer) by `factor`; dtypes are kept."""
    shape = tuple(max(1, round(side * factor)) for side in image.shape)
    small = resize(image.astype(np.float64), shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        small = np.clip(np.rint(small), info.min, info.max)
    small_labels = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True)
    return small.astype(image.dtype), small_labels.astype(labels.dtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="folder of NAME.tif + NAME_masks.tif pairs")
    parser.add_argument("--out", required=True, help="folder to write (must not exist)")
    parser.add_argument("--diameter", type=float, default=24.0,
                        help="cell diameter after resizing, in px, as Cellpose measures it (a disc of the median cell area; "
                             "default 24, about the embedded sample's)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.diameter) and args.diameter > 0):
        parser.error(f"--diameter must be a positive number, not {args.diameter}")
    out = Path(args.out)
    if out.exists():
        parser.error(f"{out}: already exists")
    if not Path(args.folder).is_dir():
        parser.error(f"no such folder: {args.folder}")
    try:
        items = read_pairs(Path(args.folder))
    except (CellcascadeError, OSError, ValueError) as error:  # no pair or an unreadable one: one line, nothing written
        parser.error(str(error))
    # Cellpose's diameter (median cell area) of all pairs together: one factor for the whole folder
    diameter = float(np.median([label_diameter(item.labels) for item in items]))
    factor = args.diameter / diameter
    out.mkdir(parents=True)
    for item in items:
        image, labels = rescale_pair(item.image, item.labels, factor)
        write_tiff(out / f"{item.name}.tif", image)
        write_tiff(out / f"{item.name}_masks.tif", labels)
    info_path = Path(args.folder) / "budget.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        info["rescaled"] = {"factor": factor, "diameter_px_before": diameter, "diameter_px_after": args.diameter}
        (out / "budget.json").write_text(json.dumps(info, indent=2))
    print(f"wrote {out}: {len(items)} pair(s) resized by {factor:.3f} (cell diameter {diameter:.1f} -> "
          f"{args.diameter:.1f} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
