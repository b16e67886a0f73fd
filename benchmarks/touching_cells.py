"""How often do cells touch, and how dark is the image where they do? Real training half vs synthetic folders.

For the embedded sample (or another densely annotated dataset) split as the segmentation benchmark splits it,
prints and writes a markdown table of :func:`cellcascade.evaluation.contacts.contact_statistics`: touching pairs per
cell and the intensity dip where they touch (median and quartiles), for the real training part, the real test part
and every synthetic folder (taken to be densely annotated, as generated data is); with ``--figure PNG`` also crops of
touching pairs, one row per dataset (image, with the annotated outlines in magenta beside it).

Usage::

    python benchmarks/touching_cells.py runs/synthetic-a runs/synthetic-b --out results/touching_cells.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellcascade.data import read_dataset
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.contacts import contact_statistics, touching_pairs
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


def pair_crops(items, count: int, side: int = 40) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to `count` (image, labels) windows of `side` px centred between the centroids of touching pairs, in image
    order; windows that would leave the image are skipped."""
    crops = []
    for item in items:
        for pair in touching_pairs(item.labels):
            centres = ndi.center_of_mass(np.ones(item.labels.shape), item.labels, list(pair))
            middle = np.round(np.mean(centres, axis=0)).astype(int) - side // 2
            if middle.min() < 0 or np.any(middle + side > np.array(item.labels.shape)):
                continue
            window = tuple(slice(m, m + side) for m in middle)
            crops.append((item.image[window].astype(np.float64), item.labels[window]))
            if len(crops) == count:
                return crops
    return crops


def draw_figure(rows: list[tuple[str, list]], path: Path, count: int) -> None:
    """One row per dataset: `count` touching-pair crops, each as image | image with the annotated outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    figure, axes = plt.subplots(len(rows), 2 * count, figsize=(1.1 * 2 * count, 1.3 * len(rows)), squeeze=False)
    for row, (name, crops) in enumerate(rows):
        for k in range(count):
            for axis in axes[row, 2 * k : 2 * k + 2]:
                axis.set_axis_off()
            if k >= len(crops):
                continue
            image, labels = crops[k]
            low, high = np.percentile(image, [1, 99.5])
            gray = np.clip((image - low) / max(high - low, 1e-9), 0, 1)
            rgb = np.dstack([gray] * 3)
            rgb[find_boundaries(labels, mode="inner")] = (1, 0, 1)
            axes[row, 2 * k].imshow(gray, cmap="gray", vmin=0, vmax=1)
            axes[row, 2 * k + 1].imshow(rgb)
        axes[row, 0].set_title(name, loc="left", fontsize=8)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.88, wspace=0.08, hspace=0.35)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("synthetic", nargs="*", type=Path, help="folders of generated image/mask pairs")
    parser.add_argument("--data", default="sample", help="densely annotated real data (default: the embedded sample)")
    parser.add_argument("--test", default="auto", help="held-out part, as segmentation_benchmark.py --test (default auto)")
    parser.add_argument("--max-images", type=int, default=64, help="first N images of each synthetic folder (default 64)")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--figure", type=Path, help="also draw touching-pair crops of every dataset into this PNG")
    parser.add_argument("--pairs", type=int, default=6, help="crops per dataset in the figure (default 6)")
    args = parser.parse_args(argv)
    try:
        if args.pairs < 1 or args.max_images < 1:
            raise CellcascadeError(f"--pairs and --max-images must be at least 1, not {args.pairs} and {args.max_images}")
        for path in (args.out, args.figure):
            if path is not None and not path.parent.is_dir():
                raise CellcascadeError(f"{path}: its folder {path.parent} does not exist")
        split = split_train_test(read_dataset(args.data, dense=True), args.test)
        datasets = [("real, training part", split.train), ("real, test part", split.test)]
        datasets += [(str(folder), read_dataset(folder, dense=True)[: args.max_images]) for folder in args.synthetic]
        rows = [(name, (len(items), contact_statistics(items))) for name, items in datasets]
    except CellcascadeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = table(rows)
    print(text, end="")
    if args.figure is not None:
        draw_figure([(name, pair_crops(items, args.pairs)) for name, items in datasets], args.figure, args.pairs)
    if args.out is not None:
        command = " ".join(["python", "benchmarks/touching_cells.py", *(argv if argv is not None else sys.argv[1:])])
        args.out.write_text(f"# Touching cells\n\nCommand: `{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
