"""Realism of full 2D generation: cellcascade vs the classic simulator, against held-out real images.

Both generators learn from the same annotations — the benchmark's annotation budget (``cellcascade budget``: a
patch of the training half with about 15 annotated cells) — and both are compared with the *held-out* test part
(the right half of the embedded sample), which neither saw. Each synthetic set has ``--n`` images of ``--size``
with the budget's cell density. ``cellcascade.evaluation.report.evaluate_folders`` then gives KID (mean ± std over
random subsets) and FID on cell crops and on image tiles, with the set sizes. A figure shows real | cellcascade |
classic crops and tiles, each set scaled as the metric sees it.

The cascade is fitted beforehand on exactly the budget (the step that takes an hour on a 2-core CPU)::

    cellcascade budget sample --out budget-sample
    cellcascade fit budget-sample --dense --out cascade-sample-budget --mask-steps 1000 --texture-steps 1200 --batch-size 16

Usage::

    python benchmarks/texture_realism.py --cascade cascade-sample-budget [--data sample] [--n 16] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from cellcascade.classic import ClassicGenerator  # noqa: E402
from cellcascade.data import read_dataset  # noqa: E402
from cellcascade.evaluation.realism import normalize_intensities  # noqa: E402
from cellcascade.evaluation.report import evaluate_folders  # noqa: E402
from cellcascade.evaluation.splits import choose_budget, split_train_test  # noqa: E402
from cellcascade.io.tiff import write_tiff  # noqa: E402
from cellcascade.pipelines.cascade import Cascade  # noqa: E402


def write_pairs(folder: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Write (image, labels) pairs as NAME.tif + NAME_masks.tif."""
    folder.mkdir(parents=True)
    for i, (image, labels) in enumerate(pairs):
        write_tiff(folder / f"img_{i:04d}.tif", image)
        write_tiff(folder / f"img_{i:04d}_masks.tif", labels.astype(np.uint16))


def crops_for_figure(pairs, size: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` size×size windows centred on random annotated cells (mirrored at borders), float32."""
    from skimage.measure import regionprops

    out = []
    candidates = [(k, r.centroid) for k, (_, labels) in enumerate(pairs) for r in regionprops(labels.astype(np.int32))]
    for index in rng.choice(len(candidates), size=min(count, len(candidates)), replace=False):
        k, (cy, cx) = candidates[index]
        image = np.pad(pairs[k][0].astype(np.float32), size, mode="reflect")
        r, c = int(round(cy)) + size - size // 2, int(round(cx)) + size - size // 2
        out.append(image[r : r + size, c : c + size])
    return out


def draw_figure(path: Path, sets: dict[str, list], tile: int) -> None:
    """Rows: real | cellcascade | classic; left: 6 cell crops, right: one tile of `tile` px."""
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(len(sets), 7, figsize=(14, 2.2 * len(sets)))
    for row, (name, pairs) in enumerate(sets.items()):
        tile_image = pairs[0][0][:tile, :tile].astype(np.float32)
        *crops, tile_image = normalize_intensities(crops_for_figure(pairs, 48, 6, rng) + [tile_image])
        for col, crop in enumerate(crops):
            axes[row, col].imshow(crop, cmap="gray", vmin=0, vmax=1)
        axes[row, 6].imshow(tile_image, cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_ylabel(name, fontsize=12)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("cell crops (48 px)", loc="left")
    axes[0, 6].set_title(f"tile ({tile} px)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cascade", required=True, type=Path, help="cascade folder fitted on the budget")
    parser.add_argument("--data", default="sample", help="real data (default: the embedded sample)")
    parser.add_argument("--budget", type=int, default=15, help="annotated cells in the budget (default 15)")
    parser.add_argument("--n", type=int, default=16, help="synthetic images per generator (default 16)")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), help="synthetic image size (default 256 256)")
    parser.add_argument("--crop-size", type=int, default=64, help="cell crop side for KID (default 64)")
    parser.add_argument("--tile-size", type=int, default=64, help="tile side for KID (default 64)")
    parser.add_argument("--texture-steps", type=int, default=20, help="cascade texture sampler steps (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="sample", help="result file names: texture_realism_<tag>.*")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()

    items = read_dataset(args.data)
    split = split_train_test(items)
    budget = choose_budget(split.train, args.budget, seed=0)
    cascade = Cascade.load(args.cascade)
    density = float(budget.labels.max()) / budget.labels.size  # cells per pixel, as the classic simulator follows
    size = tuple(args.size)
    cells = max(1, int(round(density * size[0] * size[1])))
    cell_range = (max(1, int(cells * 0.85)), int(np.ceil(cells * 1.15)))

    classic = ClassicGenerator.fit([budget.annotated])
    timings = {}
    t0 = time.time()
    classic_pairs = [classic.generate(size, rng=np.random.default_rng([args.seed, i]), n_cells=cell_range)
                     for i in range(args.n)]
    timings["classic_s_per_image"] = (time.time() - t0) / args.n
    t0 = time.time()
    cascade_pairs = []
    for i in tqdm(range(args.n), desc="cellcascade"):
        sample = cascade.generate(i, size, seed=args.seed, cells=cell_range, texture_steps=args.texture_steps)
        cascade_pairs.append((sample.image, sample.labels))
    timings["cellcascade_s_per_image"] = (time.time() - t0) / args.n
    real_pairs = [(item.image, item.labels) for item in split.test]

    work = Path(tempfile.mkdtemp(prefix="texture_realism_"))
    results = {}
    try:
        for name, pairs in (("real", real_pairs), ("cellcascade", cascade_pairs), ("classic", classic_pairs)):
            write_pairs(work / name, pairs)
        for name in ("cellcascade", "classic"):
            results[name] = evaluate_folders(work / "real", work / name, work / f"eval_{name}", crop_size=args.crop_size,
                                             tile_size=args.tile_size, max_samples=200, seed=args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / f"texture_realism_{args.tag}.png"
    draw_figure(figure, {"real (held out)": real_pairs, "cellcascade": cascade_pairs, "classic": classic_pairs},
                args.tile_size * 2)
    command = "python " + " ".join(sys.argv)
    record = {
        "command": command,
        "cascade": str(args.cascade),
        "cascade_trained_on": cascade.info.get("trained_on"),
        "budget": budget.summary(),
        "split": split.rule,
        "synthetic": {"n": args.n, "size": list(size), "cells_per_image": list(cell_range), "seed": args.seed,
                      "texture_steps": args.texture_steps},
        "timings": timings,
        "scores": {name: {part: r[part] for part in ("crops", "tiles", "shape")} for name, r in results.items()},
        "wall_seconds": time.time() - started,
        "host": {"machine": platform.machine(), "torch_threads": 1},
    }
    (args.out / f"texture_realism_{args.tag}.json").write_text(json.dumps(record, indent=1, default=float))

    def row(name, part):
        s = results[name][part]
        if "skipped" in s:
            return f"| {name} | {part} | skipped: {s['skipped']} | | |"
        return (f"| {name} | {part} | {s['kid_mean']:.4f} ± {s['kid_std']:.4f} | {s['fid']:.1f} | "
                f"{s['n_real']} real / {s['n_synthetic']} synthetic (subsets of {s['subset_size']}) |")

    lines = [
        f"# Realism of full 2D generation ({args.tag})", "",
        f"Command: `{command}`", "",
        f"Both generators learned only from the annotation budget ({budget.n_whole} whole + {budget.n_cut} cut cells, "
        f"box {list(budget.box)} of {budget.source}); real = held-out test part ({split.rule}). "
        f"{args.n} synthetic images of {size[0]}×{size[1]} px, {cell_range[0]}–{cell_range[1]} cells each. "
        f"Crops {args.crop_size} px around cells, tiles {args.tile_size} px. Lower is more realistic.", "",
        "| generator | set | KID (mean ± std over subsets) | FID | set sizes |",
        "|---|---|---|---|---|",
        *[row(name, part) for part in ("crops", "tiles") for name in ("cellcascade", "classic")],
        "",
        "Shape distance (Wasserstein / real std; lower is closer):", "",
        "| generator | " + " | ".join(results["classic"]["shape"].get("distance", {}).keys()) + " |",
        "|---|" + "---|" * len(results["classic"]["shape"].get("distance", {})),
        *[f"| {name} | " + " | ".join(f"{v:.3f}" for v in results[name]["shape"].get("distance", {}).values()) + " |"
          for name in ("cellcascade", "classic")],
        "",
        f"Generation time per image: cellcascade {timings['cellcascade_s_per_image']:.1f} s, classic "
        f"{timings['classic_s_per_image']:.2f} s (1 thread). Wall {record['wall_seconds'] / 60:.1f} min.", "",
        f"![real | cellcascade | classic]({figure.name})", "",
    ]
    (args.out / f"texture_realism_{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
