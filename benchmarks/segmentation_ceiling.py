"""How high can the benchmark's segmenter go on real data alone? Train on *every* annotated cell of the training part.

The segmentation benchmark (``segmentation_benchmark.py``) gives the segmenter an annotation budget of about 15
cells. This script trains the same segmenter, with the same settings, on all annotations of the same training part
(on the embedded sample: the whole left half, 73 cells against the budget's 15 whole and 6 cut ones) and scores it
on the same held-out test images at every checkpoint. It answers "what would annotating everything buy?": the
scale against which a gain from synthetic data can be read. No validation set is left (it is part of the training
data), so the table gives the test score at each checkpoint; its best-checkpoint line is an optimistic bound, not a
fair choice. At the last checkpoint it also breaks SEG down by kind of test cell (whole cells, small whole cells,
cells cut by the image edge): which cells no amount of annotation gets right.

Needs dense annotations (a sparse training image would teach unannotated cells as background).

Usage::

    python benchmarks/segmentation_ceiling.py --data sample --steps 300 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cellcascade.data import read_dataset, require_ndim
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.benchmark import _pooled  # the benchmark's own scoring, so the numbers compare
from cellcascade.evaluation.segmentation_metrics import seg_per_cell_kind
from cellcascade.evaluation.segmenters import CellposeSegmenter, apply_normalization, normalize_percentile
from cellcascade.evaluation.splits import choose_budget, split_train_test

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample", help='"sample" or a folder of densely annotated image/mask pairs')
    parser.add_argument("--tag", default="sample", help="results/segmentation_ceiling_<tag>.{md,json}")
    parser.add_argument("--test", default="auto", help='held-out images, as in segmentation_benchmark.py (default auto)')
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300, as the recorded benchmark runs)")
    parser.add_argument("--checkpoints", type=int, default=5, help="test scores at this many even steps (default 5)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="decay of the segmenter's weight moving average, in [0, 1); 0 = raw weights (default)")
    parser.add_argument("--test-augment", action="store_true",
                        help="Cellpose's test-time augmentation (flipped overlapping tiles, averaged) on the test image")
    parser.add_argument("--tile", type=int, default=64, help="training tile side in network pixels (default 64)")
    parser.add_argument("--diam-mean", type=float, default=17.0,
                        help="cell diameter in network pixels, as in segmentation_benchmark.py (default 17)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default benchmarks/results)")
    args = parser.parse_args(argv)
    command = "python benchmarks/segmentation_ceiling.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        result = run(args, command)
    except CellcascadeError as exc:
        parser.exit(2, f"error: {exc}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"segmentation_ceiling_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(report(result))
    print(report(result))
    return 0


def run(args: argparse.Namespace, command: str) -> dict:
    if args.steps < 1 or not 1 <= args.checkpoints <= args.steps:
        raise CellcascadeError(f"need steps >= 1 and checkpoints in 1..steps, not {args.steps} and {args.checkpoints}")
    started = time.time()
    torch.set_num_threads(args.threads)
    test = args.test if args.test in ("auto", "right-half") else (int(args.test) if args.test.isdigit() else args.test.split(","))
    items = read_dataset(args.data)
    require_ndim(items, 2)
    split = split_train_test(items, test)
    if not all(i.dense for i in split.train):
        raise CellcascadeError("the training part is sparsely annotated: this ceiling needs dense annotations")
    budget = choose_budget(split.train, 15, seed=0)  # only for the cell diameter the benchmark assumes at test time
    images = [apply_normalization(i.image, normalize_percentile(i.image)) for i in split.train]
    labels = [i.labels.astype(np.int32) for i in split.train]
    test_images = [apply_normalization(t.image, normalize_percentile(t.image)) for t in split.test]
    references, names = [t.labels for t in split.test], [t.name for t in split.test]
    segmenter = CellposeSegmenter(diam_mean=args.diam_mean, tile=args.tile, batch_size=4, ema=args.ema,
                                  test_augment=args.test_augment)
    curve = sorted({max(1, round(args.steps * i / args.checkpoints)) for i in range(1, args.checkpoints + 1)})
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as work:
            tic = time.time()
            checkpoints = segmenter.train(images, labels, steps=args.steps, seed=seed, work_dir=Path(work),
                                          checkpoints=curve, probabilities=None)
            predictions = {c.step: segmenter.predict(c, test_images, diameter=budget.diameter) for c in checkpoints}
        scores = {step: _pooled(references, masks, names) for step, masks in predictions.items()}
        last = predictions[checkpoints[-1].step]  # also broken down by kind of test cell
        runs.append({"seed": seed, "seconds": time.time() - tic,
                     "test_seg": {str(s): v.seg for s, v in scores.items()},
                     "test_ap50": {str(s): v.ap for s, v in scores.items()},
                     "last_checkpoint_cells": scored_test_cells(split.test, last)})
        print(f"seed {seed}: test SEG by step {[round(v.seg, 3) for v in scores.values()]}", flush=True)
    return {
        "command": command,
        "data": args.data,
        "split": split.rule,
        "train_cells": int(sum(len(np.unique(l)) - 1 for l in labels)),
        "budget_cells": budget.summary()["n_whole_cells"],
        "test_cells": int(sum(t.labels.max() for t in split.test)),
        "segmenter": segmenter.config,
        "steps": args.steps,
        "checkpoints": curve,
        "runs": runs,
        "wall_seconds": time.time() - started,
    }


def scored_test_cells(test, predictions) -> list[dict]:
    """Every reference cell of the test images: image name, label, size (px), kind and SEG Jaccard index."""
    return [{"image": item.name, **cell} for item, prediction in zip(test, predictions)
            for cell in seg_per_cell_kind(item.labels, prediction)]


def loss_table(result: dict) -> list[str]:
    """Markdown rows: per kind of test cell, its count, its mean Jaccard, misses and its share of the SEG lost."""
    runs = result["runs"]
    n_cells = len(runs[0]["last_checkpoint_cells"])
    lines = ["| test cells | n | mean Jaccard (± std over seeds) | missed per seed (Jaccard 0) | SEG lost to them |",
             "|---|---|---|---|---|"]
    for kind in ("whole", "small", "cut"):
        per_seed = [[c["jaccard"] for c in r["last_checkpoint_cells"] if c["kind"] == kind] for r in runs]
        if not per_seed[0]:
            continue
        means = np.array([np.mean(j) for j in per_seed])
        std = np.std(means, ddof=1) if len(means) > 1 else 0.0
        missed = [sum(v == 0 for v in j) for j in per_seed]
        lost = np.mean([sum(1 - v for v in j) / n_cells for j in per_seed])
        lines.append(f"| {kind} | {len(per_seed[0])} | {means.mean():.3f} ± {std:.3f} | "
                     f"{', '.join(str(m) for m in missed)} | {lost:.3f} |")
    return lines


def report(result: dict) -> str:
    def mean_std(key: str, step: int) -> str:
        values = np.array([r[key][str(step)] for r in result["runs"]])
        std = np.std(values, ddof=1) if len(values) > 1 else 0.0
        return f"{values.mean():.3f} ± {std:.3f}"

    lines = [
        "# Segmenter ceiling: every training annotation instead of the budget",
        "",
        f"Command: `{result['command']}`",
        "",
        f"- Data `{result['data']}`; split: {result['split']}; {result['train_cells']} annotated training cells "
        f"(the benchmark's budget: {result['budget_cells']} whole cells); {result['test_cells']} test cells.",
        f"- Segmenter: {result['segmenter']}; {result['steps']} steps; seeds {[r['seed'] for r in result['runs']]}.",
        f"- Wall time: {result['wall_seconds'] / 60:.1f} min.",
        "",
        "Test scores on the held-out images (mean ± std over seeds, ddof = 1) at each checkpoint:",
        "",
        "| steps | SEG | AP@0.5 |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | {mean_std('test_seg', s)} | {mean_std('test_ap50', s)} |" for s in result["checkpoints"]]
    best = [max(r["test_seg"].values()) for r in result["runs"]]
    lines += ["", f"Best checkpoint on the test images per seed (optimistic): SEG {np.mean(best):.3f} "
              f"(per seed {', '.join(f'{b:.3f}' for b in best)}).", ""]
    if "last_checkpoint_cells" in result["runs"][0]:
        lines += [f"Where SEG is lost at the last checkpoint ({result['checkpoints'][-1]} steps): \"cut\" cells touch the "
                  "image edge, \"small\" whole cells are below a third of the median whole-cell area of their image; \"SEG lost\" "
                  "sums 1 − Jaccard over those cells, divided by all test cells (the three add up to 1 − SEG).", ""]
        lines += loss_table(result) + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
