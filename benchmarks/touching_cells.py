"""How often do cells touch, and how dark is the image where they do? Real training half vs synthetic folders.

For the embedded sample (or another densely annotated dataset) split as the segmentation benchmark splits it,
prints and writes a markdown table of :func:`cellcascade.evaluation.contacts.contact_statistics`: touching pairs per
cell and the intensity dip where they touch (median and quartiles), for the real training part, the real test part
and every synthetic folder (taken to be densely annotated, as generated data is).

Usage::

    python benchmarks/touching_cells.py runs/synthetic-a runs/synthetic-b --out results/touching_cells.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellcascade.data import read_dataset
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.contacts import contact_statistics
from cellcascade.evaluation.splits import split_train_test


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| data | images | cells | touching pairs per cell | dip median (q25-q75) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (images, stats) in rows:
        dip = stats["dip"]
        lines.append(
            f"| {name} | {images} | {stats['cells']} | {stats['pairs_per_cell']:.3f} | "
            f"{dip['median']:.3f} ({dip['q25']:.3f}-{dip['q75']:.3f}, n={dip['n']}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("synthetic", nargs="*", type=Path, help="folders of generated image/mask pairs")
    parser.add_argument("--data", default="sample", help="densely annotated real data (default: the embedded sample)")
    parser.add_argument("--test", default="auto", help="held-out part, as segmentation_benchmark.py --test (default auto)")
    parser.add_argument("--max-images", type=int, default=64, help="first N images of each synthetic folder (default 64)")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    try:
        split = split_train_test(read_dataset(args.data, dense=True), args.test)
        rows = [("real, training part", (len(split.train), contact_statistics(split.train))),
                ("real, test part", (len(split.test), contact_statistics(split.test)))]
        for folder in args.synthetic:
            items = read_dataset(folder, dense=True)[: args.max_images]
            rows.append((str(folder), (len(items), contact_statistics(items))))
    except CellcascadeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = table(rows)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
