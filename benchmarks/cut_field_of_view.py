"""Cut PX pixels from every side of each pair in a generated folder, as `generate --border-margin PX` does.

For ablations on cells cut by the image border without re-running the texture model: a folder generated at
``--size H W`` becomes the folder that ``--size H-2PX W-2PX --border-margin PX`` with the same seeds would give
(:func:`cellcascade.population.field_of_view.crop_field_of_view`: cut cells keep their visible part, pieces under
15 px are dropped, ids stay consecutive in the scene's order).

Usage::

    python benchmarks/cut_field_of_view.py runs/synthetic-ovl-256 runs/synthetic-ovlborder8-256 --margin 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tifffile
from tqdm import tqdm

from cellcascade.errors import CellcascadeError
from cellcascade.population.field_of_view import crop_field_of_view


def cut_folder(source: Path, out: Path, margin: int) -> tuple[int, int, int]:
    """Write every ``NAME.tif`` + ``NAME_masks.tif`` pair of `source`, cut, to `out`; returns (pairs, cells, cut cells)."""
    masks = sorted(source.glob("*_masks.tif"))
    if not masks:
        raise CellcascadeError(f"{source}: no NAME_masks.tif files")
    if out.exists():
        raise CellcascadeError(f"{out}: exists; choose a new folder")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        counts = _cut_pairs(masks, partial, margin)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written
        raise
    (partial / "field_of_view.json").write_text(json.dumps(
        {"source": str(source), "margin": margin, "cells": counts[0], "cut_cells": counts[1],
         "command": " ".join(sys.argv)}, indent=1))
    partial.rename(out)
    return len(masks), *counts


def _cut_pairs(masks: list[Path], partial: Path, margin: int) -> tuple[int, int]:
    """Cut each pair into `partial`; returns (cells, cut cells) over all images."""
    n_cells = n_cut = 0
    for mask_file in tqdm(masks, desc="images", unit="image"):
        image_file = mask_file.with_name(mask_file.name.replace("_masks.tif", ".tif"))
        image, labels = tifffile.imread(image_file), tifffile.imread(mask_file)
        table = [{"id": int(i)} for i in np.unique(labels[labels > 0])]
        cut_labels, cut_table = crop_field_of_view(labels, table, margin)
        n_cells += len(cut_table)
        n_cut += sum(bool(c["cut"]) for c in cut_table)
        tifffile.imwrite(partial / image_file.name, image[margin:-margin or None, margin:-margin or None],
                         compression="zlib")
        tifffile.imwrite(partial / mask_file.name, cut_labels, compression="zlib")
    return n_cells, n_cut


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of NAME.tif + NAME_masks.tif pairs (e.g. from generate)")
    parser.add_argument("out", type=Path, help="new folder for the cut pairs (written whole or not at all)")
    parser.add_argument("--margin", type=int, required=True, metavar="PX", help="pixels cut from every side")
    args = parser.parse_args(argv)
    try:
        if args.margin < 1:
            raise CellcascadeError(f"--margin must be at least 1 pixel, not {args.margin}")
        pairs, cells, cut = cut_folder(args.source, args.out, args.margin)
    except CellcascadeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{pairs} pairs written to {args.out}: {cells} cells, {cut} of them cut by the border ({cut / max(cells, 1):.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
