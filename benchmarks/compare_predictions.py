"""Where do two segmentation benchmark runs differ? Test cells side by side, cell by cell.

Reads benchmark JSON files (``segmentation_benchmark.py`` output) and the test predictions that the same runs saved
with ``--save-predictions DIR``; prints every test cell whose Jaccard index differs between the runs by more than
``--min-difference`` (plus the mean per kind of cell), and draws crops around the cells that differ most:
image | each run's predicted outlines (magenta) over the annotated ones (green).

Usage::

    python benchmarks/segmentation_benchmark.py … --arms real --seeds 0 --tag A --save-predictions pred-A
    python benchmarks/segmentation_benchmark.py … --arms mixed --seeds 0 --tag B --save-predictions pred-B
    python benchmarks/compare_predictions.py results/segmentation_A.json pred-A results/segmentation_B.json pred-B \
        --out compare.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile

from cellcascade.data import read_dataset
from cellcascade.evaluation.benchmark import prediction_file_name
from cellcascade.evaluation.segmenters import relabel
from cellcascade.evaluation.splits import split_train_test


def load_runs(pairs: list[tuple[Path, Path]]) -> tuple[dict, list[dict]]:
    """The test images of the first run's split, and one entry per (arm, seed) of every run: its name, per-image
    cells (label -> cell dict) and predictions (image name -> (Y, X) int array)."""
    configs, runs = [], []
    for json_path, predictions in pairs:
        result = json.loads(json_path.read_text())
        configs.append({k: result["config"][k] for k in ("data", "test")})
        for arm, entry in result["arms"].items():
            for run in entry["runs"]:
                predicted, cells = {}, {}
                for image in run["test_per_image"]:
                    path = predictions / prediction_file_name(arm, run["seed"], image["name"])
                    if not path.is_file():
                        raise SystemExit(f"error: {path}: no saved prediction (run the benchmark with --save-predictions)")
                    if "cells" not in image:
                        raise SystemExit(f"error: {json_path}: no per-cell scores (recorded before they existed)")
                    predicted[image["name"]] = tifffile.imread(path)
                    cells[image["name"]] = {c["label"]: c for c in image["cells"]}
                runs.append({"name": f"{arm}, seed {run['seed']}", "cells": cells, "predictions": predicted})
    if any(c != configs[0] for c in configs):
        raise SystemExit("error: the runs were tested on different data or splits")
    items = read_dataset(configs[0]["data"])
    test = configs[0]["test"]
    tests = {t.name: t for t in split_train_test(items, test if isinstance(test, (str, int)) else list(test)).test}
    return tests, runs


def differing_cells(runs: list[dict], min_difference: float) -> list[tuple[str, int, float]]:
    """(image name, reference label, spread of Jaccard over runs) of every cell whose spread exceeds
    `min_difference`, largest spread first."""
    out = []
    for image, cells in runs[0]["cells"].items():
        for label in cells:
            values = [run["cells"][image][label]["jaccard"] for run in runs]
            spread = max(values) - min(values)
            if spread > min_difference:
                out.append((image, label, spread))
    return sorted(out, key=lambda x: -x[2])


def draw(tests: dict, runs: list[dict], cells: list[tuple[str, int, float]], path: Path, half: int = 32) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    shown = {}  # per test image drawn: (display image scaled to [0, 1], relabelled reference as the JSON numbers it)
    for image_name in {c[0] for c in cells}:
        image = tests[image_name].image.astype(float)
        low, high = np.percentile(image, (1, 99.5))
        shown[image_name] = np.clip((image - low) / max(high - low, 1e-9), 0, 1), relabel(tests[image_name].labels)
    fig, axes = plt.subplots(len(cells), 1 + len(runs), figsize=(2.2 * (1 + len(runs)), 2.3 * len(cells)), squeeze=False)
    for row, (image_name, label, _) in zip(axes, cells):
        scaled, reference = shown[image_name]
        ys, xs = np.nonzero(reference == label)
        cy, cx = int(ys.mean()), int(xs.mean())
        window = (slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half))
        for ax, run in zip(row, [None] + runs):
            rgb = np.stack([scaled[window]] * 3, axis=-1)
            if run is not None:
                rgb[find_boundaries(reference[window], mode="inner")] = (0, 1, 0)
                rgb[find_boundaries(run["predictions"][image_name][window], mode="inner")] = (1, 0, 1)
                ax.set_title(f"{run['name']}\nJaccard {run['cells'][image_name][label]['jaccard']:.2f}", fontsize=7)
            else:
                ax.set_title(f"cell {label} ({runs[0]['cells'][image_name][label]['kind']})", fontsize=7)
            ax.imshow(rgb, interpolation="nearest")
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="pairs of a benchmark JSON and the folder its run's --save-predictions wrote")
    parser.add_argument("--out", type=Path, required=True, help="the PNG of crops around the cells that differ most")
    parser.add_argument("--min-difference", type=float, default=0.05,
                        help="list cells whose Jaccard index differs between runs by more than this (default 0.05)")
    parser.add_argument("--top", type=int, default=6, help="cells drawn, largest difference first (default 6)")
    args = parser.parse_args(argv)
    if len(args.runs) % 2 or len(args.runs) < 4:
        parser.error("give pairs JSON PREDICTIONS-DIR, at least two runs")
    if args.top < 1:
        parser.error(f"--top must be at least 1, not {args.top}")
    pairs = list(zip(args.runs[::2], args.runs[1::2]))
    for json_path, predictions in pairs:
        if not json_path.is_file():
            parser.error(f"{json_path}: no such benchmark JSON file")
        if not predictions.is_dir():
            parser.error(f"{predictions}: no such predictions folder")
    tests, runs = load_runs(pairs)
    cells = differing_cells(runs, args.min_difference)
    print("image | cell | kind | size | " + " | ".join(r["name"] for r in runs))
    for image, label, _ in cells:
        first = runs[0]["cells"][image][label]
        print(f"{image} | {label} | {first['kind']} | {first['size']} | "
              + " | ".join(f"{r['cells'][image][label]['jaccard']:.3f}" for r in runs))
    for kind in ("whole", "cut", "small"):
        means = [np.mean([c["jaccard"] for cs in r["cells"].values() for c in cs.values() if c["kind"] == kind] or [np.nan])
                 for r in runs]
        print(f"mean Jaccard, {kind} cells: " + " | ".join(f"{m:.3f}" for m in means))
    if cells:
        draw(tests, runs, cells[: args.top], args.out)
        print(f"crops of {min(args.top, len(cells))} cells in {args.out}")
    else:
        print("no cell differs by more than", args.min_difference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
