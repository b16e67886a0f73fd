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
import sys
from pathlib import Path

import numpy as np

from cellcascade.errors import CellcascadeError
from cellcascade.io.output import rewrite_pairs
from cellcascade.population.field_of_view import crop_field_of_view


def cut_folder(source: Path, out: Path, margin: int) -> tuple[int, int, int]:
    """Write every ``NAME.tif`` + ``NAME_masks.tif`` pair of `source`, cut, to `out`; returns (pairs, cells, cut cells)."""

    def cut(index: int, image: np.ndarray, labels: np.ndarray):
        table = [{"id": int(i)} for i in np.unique(labels[labels > 0])]
        cut_labels, cut_table = crop_field_of_view(labels, table, margin)
        return image[margin:-margin, margin:-margin], cut_labels, (len(cut_table), sum(c["cut"] for c in cut_table))

    def record(counts: list[tuple[int, int]]) -> tuple[str, dict]:
        cells, cut_cells = (int(sum(c[i] for c in counts)) for i in (0, 1))
        return "field_of_view.json", {"source": str(source), "margin": margin, "cells": cells, "cut_cells": cut_cells,
                                      "command": " ".join(sys.argv)}

    counts = rewrite_pairs(source, out, cut, record=record)
    return len(counts), *(int(sum(c[i] for c in counts)) for i in (0, 1))


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
