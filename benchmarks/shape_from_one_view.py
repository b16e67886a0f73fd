"""Shape from a single 2D view: real 3D nuclei lifted from their 2D masks, vs two baselines (issue 5).

For every whole nucleus of two real 3D label volumes (BBBC050 mouse embryo from ../shared/data, the synthetic 3D
sample of the ``stardist`` package), the pipeline is given only the nucleus's **z-projection** (the 2D mask a 2D
annotation of a widefield image would show) and lifts it to 3D; the result is compared with the true 3D mask
after centring (3D IoU, volume error, z-extent error). Three methods:

* ``multiview``: the multiview diffusion model generates 8 side-view silhouettes of the nucleus from its 2D mask,
  the fast reconstruction fits an SDF to top view + side views and voxelises it (cellcascade's 3D path);
* ``extrusion``: the 2D mask repeated over the median true height of the data set's nuclei;
* ``ellipsoid``: the ellipsoid of revolution through the 2D mask's moment ellipse (z semi-axis = minor semi-axis).

The multiview model used here knows no 3D mask of these nuclei: it is trained (``--train``) on the built-in shape
prior only, drawn from the 2D z-projections of the nuclei (what a user with 2D annotations has), with an axial
ratio range set from the data: the 10th-90th percentile of the nuclei's z extent / xy equivalent diameter. That is
the same kind of knowledge the extrusion baseline gets (the median height).

Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/shape_from_one_view.py --train runs/multiview-nuclei   # ~1 h on 1 core
    OMP_NUM_THREADS=1 python benchmarks/shape_from_one_view.py --model runs/multiview-nuclei

The model is trained with the library's defaults, x0 prediction and view chords (recorded in
benchmarks/results/shape_from_one_view_x0_chords.md); the ablations ``--prediction epsilon`` (predict the noise) and
``--no-view-chords`` (no chord profiles of the top view) train the variants recorded in
shape_from_one_view.md (both), shape_from_one_view_chords.md (epsilon) and shape_from_one_view_x0.md (no chords).

Writes benchmarks/results/shape_from_one_view.{md,json,png} (or TAG.{md,json,png} with --tag TAG). Needs ../shared/data for BBBC050 (left out, with a
note, when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi

from cellcascade.data import AnnotatedImage
from cellcascade.data.readers import load_sample_3d
# The same volumes, voxel sizes and spacing rule as the reconstruction benchmark (benchmarks/ is on sys.path when a
# script in it runs).
from reconstruction_modes import BBBC050, BBBC050_SPACING, stardist_spacing  # noqa: E402
from cellcascade.shapes3d import axial_ratio, centred_iou, ellipsoid_of_revolution, extrude, median_height, z_extent

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRAIN_STEPS, TRAIN_BATCH, SHAPES_PER_MASK = 1500, 8, 32
# lift_masks' defaults: draws averaged per cell, hull tolerance, voxels outside the 2D mask cleared
LIFT = {"samples": 4, "hull_tolerance": 1, "carve": True}


def datasets() -> list[dict]:
    """The real 3D label volumes: name, labels (Z, Y, X) int, spacing (dz, dy, dx), whole-nucleus crops (bool)."""
    found = []
    if BBBC050.exists():
        found.append(("BBBC050", tifffile.imread(BBBC050), BBBC050_SPACING))
    else:
        print(f"note: {BBBC050} not found (../shared/data absent): BBBC050 left out", file=sys.stderr)
    stardist = load_sample_3d()[0].labels
    found.append(("stardist-3D", stardist, stardist_spacing(stardist)))
    out = []
    for name, labels, spacing in found:
        cells, ids = [], []
        for index, box in enumerate(ndi.find_objects(labels), start=1):
            if box is None or any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape)):
                continue  # cells cut by the volume's border have no true shape
            cells.append(labels[box] == index)
            ids.append(index)
        out.append({"name": name, "spacing": spacing, "cells": cells, "ids": ids})
    return out


def projection_items(data: list[dict]) -> list[AnnotatedImage]:
    """One 2D annotated image per nucleus: its z-projection (padded by one pixel, so it is a whole cell)."""
    items = []
    for d in data:
        for index, cell in zip(d["ids"], d["cells"]):
            labels = np.pad(cell.any(axis=0), 1).astype(np.int32)
            items.append(AnnotatedImage(labels.astype(np.uint16), labels, f"{d['name']}-{index}", dense=True))
    return items


def ratio_range(data: list[dict]) -> tuple[float, float]:
    """10th and 90th percentile of z extent / xy equivalent diameter over all nuclei."""
    ratios = [axial_ratio(cell, d["spacing"]) for d in data for cell in d["cells"]]
    low, high = np.percentile(ratios, [10, 90])
    return float(round(low, 2)), float(round(high, 2))


def train(out: Path, device: str, **model_options) -> None:
    """Train the benchmark's model; `model_options` (view_chords, prediction_type) override the library's defaults."""
    from cellcascade.training.loop import TrainConfig
    from cellcascade.training.multiview import MultiviewDataConfig, train_multiview_model

    data = datasets()
    ratios = ratio_range(data)
    print(f"training on {sum(len(d['cells']) for d in data)} z-projections, axial ratio range {ratios}", flush=True)
    train_multiview_model(
        projection_items(data), out,
        data=MultiviewDataConfig(size=32, n_side=8, spacing=(1.0, 1.0, 1.0), axial_ratio=ratios,
                                 shapes_per_mask=SHAPES_PER_MASK),
        preset="cpu", **model_options,
        config=TrainConfig(steps=TRAIN_STEPS, batch_size=TRAIN_BATCH, learning_rate=3e-4, checkpoint_every=100),
        device=device,
    )


def score(predicted: np.ndarray, truth: np.ndarray, spacing) -> dict:
    """3D IoU after centring, relative volume error, z-extent error (physical) of one reconstruction."""
    return {"iou": centred_iou(predicted, truth),
            "volume_error": float(predicted.sum() / truth.sum() - 1),
            "z_extent_error": float(z_extent(predicted, spacing) - z_extent(truth, spacing))}


def true_views(pipe, truths: list[np.ndarray], spacing) -> list[np.ndarray]:
    """Upper bound of the multiview path at the model's resolution: the *true* side views (rendered from the 3D
    masks, in the frame generation uses) + the top view, through the same fast reconstruction."""
    from dataclasses import replace

    from cellcascade.pipelines.lift import largest_component
    from cellcascade.reconstruction import Views, default_config, fit_sdf, render_silhouettes, voxelize
    from cellcascade.training.multiview import cell_frame

    frames = pipe.frames([t.any(axis=0) for t in truths], spacing[1:])
    views = np.stack([
        np.concatenate([f.image[None].astype(np.float32),
                        render_silhouettes(t, pipe.views, spacing, pipe.unet.config.sample_size,
                                           half_width=f.half_width, centre=cell_frame(t, spacing)[0])])
        for f, t in zip(frames, truths)])
    all_views = Views((90.0,) + pipe.views.elevation, (0.0,) + pipe.views.azimuth)
    half_width = np.array([f.half_width for f in frames])
    fit = fit_sdf(views, all_views, config=replace(default_config("fast"), hull_tolerance=LIFT["hull_tolerance"]),
                  half_width=tuple(half_width), generator=torch.Generator().manual_seed(0))
    box = tuple(2 * int(np.ceil(half_width.max() / s)) + 1 for s in spacing)
    return [largest_component(v) for v in voxelize(fit.field, box, spacing)]


def evaluate(model: Path, seeds: list[int], steps: int, device: str, samples: int = LIFT["samples"]) -> dict:
    from cellcascade.pipelines.lift import lift_masks
    from cellcascade.pipelines.multiview import load_multiview_pipeline

    pipe = load_multiview_pipeline(model, device)
    training = json.loads((model / "training.json").read_text())
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    report = {"command": " ".join([f"{prefix}python benchmarks/shape_from_one_view.py"] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s)",
              "input": "z-projection of each nucleus (its 2D mask seen down z)", "model": str(model),
              "model_training": {**{k: training[k] for k in ("data", "preset", "train_config", "samples", "cells_2d",
                                                             "cells_3d", "initial_loss", "final_loss")},
                                 "view_chords": training.get("view_chords", False),
                                 "prediction_type": training.get("prediction_type", "epsilon")},
              "multiview_steps": steps, "lift": {**LIFT, "samples": samples}, "seeds": seeds, "datasets": []}
    for d in datasets():
        spacing, truths = d["spacing"], d["cells"]
        masks = [cell.any(axis=0) for cell in truths]
        height = median_height(truths, spacing)
        rows = {"extrusion": [score(extrude(m, height, spacing), t, spacing) for m, t in zip(masks, truths)],
                "ellipsoid": [score(ellipsoid_of_revolution(m, spacing), t, spacing) for m, t in zip(masks, truths)]}
        rows["true views"] = [score(p, t, spacing) for p, t in zip(true_views(pipe, truths, spacing), truths)]
        per_seed, seconds, fallbacks = [], 0.0, 0
        for seed in seeds:
            start = time.perf_counter()
            lifted = lift_masks(pipe, masks, spacing, num_inference_steps=steps, samples=samples,
                                hull_tolerance=LIFT["hull_tolerance"], carve=LIFT["carve"],
                                generator=torch.Generator().manual_seed(seed), device=device)
            seconds += time.perf_counter() - start
            fallbacks += lifted.source.count("ellipsoid")
            per_seed.append([score(p, t, spacing) for p, t in zip(lifted.masks, truths)])
        rows["multiview"] = [{k: float(np.mean([s[i][k] for s in per_seed])) for k in per_seed[0][0]}
                             for i in range(len(truths))]
        entry = {"name": d["name"], "spacing": list(spacing), "ids": d["ids"], "median_height": height,
                 "true_voxels": [int(t.sum()) for t in truths], "methods": rows,
                 "multiview_mean_iou_per_seed": [float(np.mean([r["iou"] for r in s])) for s in per_seed],
                 "multiview_seconds_per_cell": seconds / (len(seeds) * len(truths)),
                 "multiview_fallbacks": fallbacks}
        report["datasets"].append(entry)
        print(d["name"], {k: round(float(np.mean([r["iou"] for r in v])), 4) for k, v in rows.items()}, flush=True)
    every = {k: [r["iou"] for d in report["datasets"] for r in d["methods"][k]] for k in METHODS}
    report["mean_iou_all"] = {k: float(np.mean(v)) for k, v in every.items()}
    return report


METHODS = ("multiview", "extrusion", "ellipsoid", "true views")


def markdown(report: dict) -> str:
    lines = ["# Shape from a single 2D view (real 3D nuclei)", "",
             f"Command: `{report['command']}`  ", f"Date: {report['date']}, {report['machine']}  ",
             f"Input: {report['input']}. Multiview model: trained on the built-in shape prior only "
             f"({report['model_training']['cells_2d']} z-projections, axial ratio "
             f"{report['model_training']['data']['axial_ratio']}, {report['model_training']['train_config']['steps']} "
             f"steps, preset {report['model_training']['preset']}"
             f"{', view chords' if report['model_training'].get('view_chords') else ''}"
             f"{', x0 prediction' if report['model_training'].get('prediction_type') == 'sample' else ''}); "
             f"{report['multiview_steps']} sampler steps, "
             f"{report['lift']['samples']} draws averaged per nucleus, hull tolerance {report['lift']['hull_tolerance']}, "
             f"{'carved to the 2D mask' if report['lift'].get('carve') else 'not carved'}; "
             f"multiview rows are means over seeds {report['seeds']}.", "",
             "| data | nuclei | multiview IoU | extrusion IoU | ellipsoid IoU | true views IoU (upper bound) | "
             "multiview s/cell | fallbacks |", "|---|---|---|---|---|---|---|---|"]
    for d in report["datasets"]:
        means = {k: np.mean([r["iou"] for r in d["methods"][k]]) for k in METHODS}
        seeds = d["multiview_mean_iou_per_seed"]
        lines.append(f"| {d['name']} | {len(d['ids'])} | {means['multiview']:.3f} (seeds: {np.mean(seeds):.3f} ± "
                     f"{np.std(seeds):.3f}) | {means['extrusion']:.3f} | {means['ellipsoid']:.3f} | {means['true views']:.3f} | "
                     f"{d['multiview_seconds_per_cell']:.2f} | {d['multiview_fallbacks']} |")
    all_ = report["mean_iou_all"]
    lines += ["", f"All nuclei: mean IoU multiview {all_['multiview']:.3f}, extrusion {all_['extrusion']:.3f}, "
              f"ellipsoid {all_['ellipsoid']:.3f}; true views (the multiview path's ceiling at this silhouette size "
              f"and frame: the true side views instead of generated ones) {all_['true views']:.3f}.", "",
              "## Per nucleus", "",
              "| data | id | true voxels | " + " | ".join(f"{m} IoU / vol. err / z err" for m in METHODS) + " |",
              "|---|---|---|" + "---|" * len(METHODS)]
    for d in report["datasets"]:
        for i, index in enumerate(d["ids"]):
            cells = [d["methods"][m][i] for m in METHODS]
            lines.append(f"| {d['name']} | {index} | {d['true_voxels'][i]} | " + " | ".join(
                f"{c['iou']:.3f} / {c['volume_error']:+.2f} / {c['z_extent_error']:+.1f}" for c in cells) + " |")
    lines += ["", "Volume error: predicted / true volume - 1. z error: predicted - true z extent, physical units "
              "(µm for BBBC050, pixels for stardist-3D)."]
    return "\n".join(lines) + "\n"


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for k, method in enumerate(METHODS):
        values = [r["iou"] for d in report["datasets"] for r in d["methods"][method]]
        ax.scatter(np.arange(len(values)) + (k - 1) * 0.2, values, s=14, label=method)
    ax.set_xlabel("nucleus (BBBC050 first, then stardist-3D)")
    ax.set_ylabel("3D IoU after centring")
    ax.legend(fontsize=8)
    ax.set_title("Shape from the z-projection alone", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, help="train the benchmark's multiview model into this folder, then stop")
    parser.add_argument("--view-chords", action=argparse.BooleanOptionalAction, default=None,
                        help="with --train: give the model each view's chord profile of the top view (default on)")
    parser.add_argument("--prediction", choices=("sample", "epsilon"), default=None,
                        help="with --train: what the model predicts, the clean views (sample, x0; default) or the noise")
    parser.add_argument("--model", type=Path, help="a trained multiview model folder (from --train)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="multiview sampling seeds")
    parser.add_argument("--steps", type=int, default=20, help="multiview sampler steps")
    parser.add_argument("--samples", type=int, default=LIFT["samples"],
                        help=f"multiview draws averaged per nucleus (default {LIFT['samples']}, as lift_masks)")
    parser.add_argument("--tag", default="shape_from_one_view", help="name of the result files")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if (args.view_chords is not None or args.prediction is not None) and not args.train:
        parser.error("--[no-]view-chords and --prediction are training options: give them with --train OUT")
    if args.train:
        given = {"view_chords": args.view_chords, "prediction_type": args.prediction}
        train(args.train, args.device, **{k: v for k, v in given.items() if v is not None})
        return 0
    if not args.model:
        parser.error("give --train OUT or --model MODEL")
    report = evaluate(args.model, args.seeds, args.steps, args.device, args.samples)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{args.tag}.md").write_text(markdown(report))
    figure(report, RESULTS / f"{args.tag}.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
