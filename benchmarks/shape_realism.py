"""Shape realism of the mask model: generated single-cell masks vs the real training cells vs random ellipses.

For each statistic (area, eccentricity, solidity, perimeter²/area) the distance between the generated and the real
distributions is the 1D Wasserstein distance divided by the real spread (``cellcascade.evaluation.shape_stats``).
The trivial baseline draws ellipses whose area and eccentricity match the real mean and variance. Both are
compared at image scale (the model's soft outputs are resized by 1 / pixel_scale and thresholded, exactly as
``populate`` does) and at the model's crop scale (the training masks themselves). Each side is drawn with several
seeds (``--repeats``); the table gives mean ± std over them, and the verdict compares the means.

Usage::

    python benchmarks/shape_realism.py [--model default] [--n 256] [--min-solidity S] [--name NAME] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage.draw import ellipse  # noqa: E402

from cellcascade.data import extract_crops, load_sample  # noqa: E402
from cellcascade.evaluation.shape_stats import SHAPE_STATISTICS, shape_distance, shape_statistics  # noqa: E402
from cellcascade.pipelines.labels import to_image_scale  # noqa: E402
from cellcascade.pipelines.mask import load_mask_pipeline  # noqa: E402
from cellcascade.weights import default_mask_model  # noqa: E402


def random_ellipses(area: np.ndarray, eccentricity: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`n` bool masks of ellipses with area ~ Normal(mean, std) and eccentricity ~ Normal(mean, std) of the inputs."""
    masks = []
    while len(masks) < n:
        a_area = rng.normal(area.mean(), area.std())
        ecc = rng.normal(eccentricity.mean(), eccentricity.std())
        if a_area < 4 or not 0 <= ecc < 0.99:
            continue
        ratio = np.sqrt(1 - ecc**2)  # minor / major
        major = np.sqrt(a_area / (np.pi * ratio))
        size = int(2 * major + 6)
        mask = np.zeros((size, size), bool)
        rr, cc = ellipse(size / 2, size / 2, major, major * ratio, shape=mask.shape, rotation=rng.uniform(0, np.pi))
        mask[rr, cc] = True
        masks.append(mask)
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="mask model folder, or 'default' (shipped)")
    parser.add_argument("--n", type=int, default=256, help="generated masks (default 256)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--repeats", type=int, default=5, help="seeds per side (default 5)")
    parser.add_argument("--min-solidity", type=float, default=None,
                        help="redraw masks less convex than this, as generate --min-solidity (default: the model's)")
    parser.add_argument("--name", default="shape_realism", help="results file names NAME.{md,json,png}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.min_solidity is not None and not 0 <= args.min_solidity <= 1:
        parser.error(f"--min-solidity must be a number in [0, 1], not {args.min_solidity}")

    pipe = load_mask_pipeline(default_mask_model() if args.model == "default" else args.model)
    if args.min_solidity is not None:
        pipe.register_to_config(min_solidity=args.min_solidity)
    size = pipe.unet.config.sample_size
    crops = [c for c in extract_crops(load_sample(), size=size, scale="auto") if c.usable_for_shape]
    real_image = [np.pad(c.mask, 0) for c in extract_crops(load_sample(), size=64, scale=1.0) if c.usable_for_shape]
    real_crop = [c.mask for c in crops]

    real_stats = {"image": shape_statistics(real_image), "crop": shape_statistics(real_crop)}
    distances = {scale: {"cellcascade": [], "ellipse baseline": []} for scale in real_stats}
    means = {scale: {"cellcascade": [], "ellipse baseline": []} for scale in real_stats}
    start = time.perf_counter()
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        out = pipe(args.n, args.steps, generator=torch.Generator().manual_seed(seed))
        generated = {"image": [to_image_scale(s, 1 / pipe.config.pixel_scale) for s in out.soft], "crop": list(out.masks)}
        rng = np.random.default_rng(seed)
        for scale, stats in real_stats.items():
            baseline = random_ellipses(stats["area"], stats["eccentricity"], args.n, rng)
            for name, masks in (("cellcascade", generated[scale]), ("ellipse baseline", baseline)):
                synthetic = shape_statistics(masks)
                distances[scale][name].append(shape_distance(stats, synthetic))
                means[scale][name].append({k: float(np.mean(v)) for k, v in synthetic.items()})
        if repeat == 0:
            gallery_masks = out.masks
            plot_stats = (real_stats["image"], shape_statistics(generated["image"]), shape_statistics(
                random_ellipses(real_stats["image"]["area"], real_stats["image"]["eccentricity"], args.n, rng)))
    seconds = (time.perf_counter() - start) / args.repeats

    def summary(records: list[dict]) -> dict:
        return {k: (float(np.mean([r[k] for r in records])), float(np.std([r[k] for r in records])))
                for k in SHAPE_STATISTICS}

    rows = {
        scale: {
            "cellcascade": summary(distances[scale]["cellcascade"]),
            "ellipse baseline": summary(distances[scale]["ellipse baseline"]),
            "real": {k: float(np.mean(v)) for k, v in real_stats[scale].items()},
            "generated_mean": summary(means[scale]["cellcascade"]),
            "baseline_mean": summary(means[scale]["ellipse baseline"]),
        }
        for scale in real_stats
    }
    generated = gallery_masks

    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/shape_realism.py " + " ".join(sys.argv[1:])
    wins = sum(rows["image"]["cellcascade"][k][0] < rows["image"]["ellipse baseline"][k][0] for k in SHAPE_STATISTICS)
    lines = [
        "# Shape realism of the mask model (embedded sample)",
        "",
        f"Command: `{command}`  ",
        f"Model: `{args.model}`; {args.repeats} × {args.n} generated masks (seeds {args.seed}–"
        f"{args.seed + args.repeats - 1}), DDIM {args.steps} steps, min_solidity {pipe.config.min_solidity}, {seconds:.1f} s per {args.n} masks on "
        f"{platform.machine()} CPU ({torch.get_num_threads()} threads); "
        f"{len(real_image)} real whole cells of the embedded sample (cells cut by the border left out).",
        "",
        "Distance = Wasserstein distance to the real distribution / real standard deviation (lower is better); "
        f"mean ± std over {args.repeats} seeds.",
        "",
    ]
    for scale_name, row in rows.items():
        lines += [f"## At {scale_name} scale", "", "| statistic | real mean | cellcascade mean | ellipse mean | "
                  "cellcascade distance | ellipse-baseline distance |", "|---|---|---|---|---|---|"]
        for k in SHAPE_STATISTICS:
            c, e = row["cellcascade"][k], row["ellipse baseline"][k]
            lines.append(f"| {k} | {row['real'][k]:.3f} | {row['generated_mean'][k][0]:.3f} | "
                         f"{row['baseline_mean'][k][0]:.3f} | {c[0]:.3f} ± {c[1]:.3f} | {e[0]:.3f} ± {e[1]:.3f} |")
        lines.append("")
    lines.append(f"At image scale the learned model is closer than the baseline on {wins} of 4 statistics.")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{args.name}.json").write_text(json.dumps({"command": command, "seconds": seconds, **rows}, indent=1))

    fig, axes = plt.subplots(1, 5, figsize=(17, 3.2))
    for ax, k in zip(axes, SHAPE_STATISTICS):
        for values, label in zip(plot_stats, ("real", "cellcascade", "ellipses")):
            ax.hist(values[k], bins=25, histtype="step", density=True, label=label, linewidth=1.5)
        ax.set_title(k)
    axes[0].legend(fontsize=8)
    gallery = np.zeros((4 * size, 8 * size))
    for i, m in enumerate(generated[:32]):
        gallery[(i // 8) * size : (i // 8 + 1) * size, (i % 8) * size : (i % 8 + 1) * size] = m
    axes[4].imshow(gallery, cmap="gray")
    axes[4].set_title("generated masks")
    axes[4].axis("off")
    fig.tight_layout()
    fig.savefig(args.out / f"{args.name}.png", dpi=90)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
