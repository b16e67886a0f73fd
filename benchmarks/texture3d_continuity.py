"""Texture continuity along z: real 3D volumes vs volumes textured slice by slice with the 2D texture model.

Real ranges: the BBBC050 mouse-embryo volume (z interpolated by its authors to about the lateral pixel size; also
every 2nd slice, close to the original 1.75 µm z step) and stardist's synthetic 3D sample.
Synthetic: the label volumes of those two data sets (BBBC050 cropped around the nuclei, every 2nd slice, spacing
(2, 1, 1) in lateral pixels; stardist's as it is, spacing (1, 1, 1)) textured with a 2D texture model under each
noise scheme of :mod:`cellcascade.pipelines.texture3d` — independent noise per slice, the paper's shared noise
(L = inf), AR(1) with correlation lengths L (lateral pixels), and the isotropic per-frequency scheme (default) —
each raw, with the missing noise only, and after :func:`~cellcascade.pipelines.texture3d.finish_volume` (axial blur
with axial/lateral PSF ratios 1.5 and 3, + missing noise).

Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/texture3d_continuity.py --model MODEL_FOLDER \
        [--steps 10 --seeds 0 1 --volumes bbbc050 stardist --tag NAME]

MODEL_FOLDER is a cascade folder (its texture and imaging models are used) or a texture model folder (then the
imaging model is fitted on the 2D sample). Writes benchmarks/results/NAME.{md,json,png}
(NAME defaults to texture3d_continuity).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from cellcascade.data import load_sample
from cellcascade.data.readers import load_sample_3d
from cellcascade.evaluation.continuity import continuity_scores, slice_pair_correlations
from cellcascade.imaging import ImagingModel
from cellcascade.pipelines.texture import load_texture_pipeline
from cellcascade.pipelines.texture3d import finish_volume, texture_volume

ROOT = Path(__file__).resolve().parents[1]
BBBC050 = ROOT.parent / "shared" / "data" / "BBBC050-mouse-embryo-3D"
RESULTS = Path(__file__).parent / "results"
SCHEMES = [("independent (L=0)", 0.0), ("AR(1) L=2 px", 2.0), ("AR(1) L=4 px", 4.0),
           ("shared (L=inf, paper)", float("inf")), ("isotropic (default)", None)]
# name -> finish_volume arguments (None: the texture model's output as it is)
KINDS = {"raw": None, "noise only": dict(axial_blur=False), "finished r=1.5": dict(axial_ratio=1.5),
         "finished r=3": dict(axial_ratio=3.0)}


def scores(volume, labels, spacing) -> dict:
    out = continuity_scores(volume, labels, spacing)
    pairs = slice_pair_correlations(volume, labels)
    out["pair_corr_p10"], out["pair_corr_p90"] = (float(v) for v in np.percentile(pairs, [10, 90]))
    return {k: round(float(v), 4) for k, v in out.items()}


def real_volumes() -> dict:
    """name -> (image (Z, Y, X), labels (Z, Y, X) int32, spacing)."""
    out = {}
    if BBBC050.is_dir():
        image = tifffile.imread(BBBC050 / "01" / "t000.tif")
        labels = tifffile.imread(BBBC050 / "01_GT" / "SEG" / "man_seg000.tif").astype(np.int32)
        out["BBBC050, interpolated z (0.8, 0.8, 0.8) µm"] = (image, labels, (0.8, 0.8, 0.8))
        out["BBBC050, every 2nd slice (1.6, 0.8, 0.8) µm"] = (image[::2], labels[::2], (1.6, 0.8, 0.8))
    item = load_sample_3d()[0]
    out["stardist 3D sample (synthetic), (1, 1, 1)"] = (item.image, item.labels.astype(np.int32), (1.0, 1.0, 1.0))
    return out


def label_volumes(which=("bbbc050", "stardist")) -> dict:
    """name -> (labels (Z, Y, X) int32, spacing in lateral pixels)."""
    out = {}
    if "bbbc050" in which and BBBC050.is_dir():
        labels = tifffile.imread(BBBC050 / "01_GT" / "SEG" / "man_seg000.tif").astype(np.int32)
        z, y, x = (np.flatnonzero(labels.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
        crop = labels[z[0] : z[-1] + 1 : 2, max(y[0] - 4, 0) : y[-1] + 5, max(x[0] - 4, 0) : x[-1] + 5]
        out["BBBC050 labels, every 2nd slice, (2, 1, 1)"] = (crop, (2.0, 1.0, 1.0))
    if "stardist" in which:
        out["stardist 3D labels, (1, 1, 1)"] = (load_sample_3d()[0].labels.astype(np.int32), (1.0, 1.0, 1.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="cascade folder or texture model folder")
    parser.add_argument("--model-note", default="", help="how the model was made (goes into the report)")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--volumes", nargs="+", choices=["bbbc050", "stardist"], default=["bbbc050", "stardist"],
                        help="label volumes to texture")
    parser.add_argument("--tag", default="texture3d_continuity")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()

    real = {name: scores(*vol) for name, vol in real_volumes().items()}
    for name, s in real.items():
        print(name, s, flush=True)

    model = Path(args.model)
    if (model / "cascade.json").is_file():  # a cascade folder: its texture model and its imaging model
        pipe = load_texture_pipeline(model / "texture")
        imaging = ImagingModel.from_dict(json.loads((model / "imaging" / "config.json").read_text()))
        imaging_note = "from the cascade folder"
    else:
        pipe = load_texture_pipeline(model)
        imaging = ImagingModel.fit(load_sample())
        imaging_note = "fitted on the 2D sample"
    synthetic = {}
    previews = {}
    for vol_name, (labels, spacing) in label_volumes(args.volumes).items():
        for scheme, length in SCHEMES:
            runs, seconds = {kind: [] for kind in KINDS}, []
            for seed in args.seeds:
                t = time.time()
                volume = texture_volume(pipe, labels, spacing, args.steps, torch.Generator().manual_seed(seed),
                                        correlation_length=length)
                seconds.append(time.time() - t)
                for kind, finish in KINDS.items():
                    out = volume if finish is None else finish_volume(volume, imaging, spacing, rng=seed, **finish)
                    runs[kind].append(scores(out, labels, spacing))
                    if seed == args.seeds[0] and kind == "finished r=1.5":
                        previews[(vol_name, scheme)] = (out, labels)
            summary = {}
            for kind, kind_runs in runs.items():
                for key in kind_runs[0]:
                    values = [r[key] for r in kind_runs]
                    summary[f"{kind}:{key}"] = [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]
            summary["seconds_per_volume"] = round(float(np.mean(seconds)), 1)
            synthetic[f"{vol_name} | {scheme}"] = summary
            print(vol_name, scheme, summary, flush=True)

    RESULTS.mkdir(exist_ok=True)
    payload = {"command": command(args), "model": args.model, "model_note": args.model_note, "steps": args.steps,
               "seeds": args.seeds, "imaging": f"{imaging.summary()} ({imaging_note})", "real": real, "synthetic": synthetic,
               "total_seconds": round(time.time() - started, 1), "machine": platform.platform()}
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(payload, indent=1))
    (RESULTS / f"{args.tag}.md").write_text(markdown(payload))
    save_preview(previews, RESULTS / f"{args.tag}.png")
    print(f"wrote {RESULTS / args.tag}.md in {time.time() - started:.0f} s")


def command(args) -> str:
    seeds = " ".join(str(s) for s in args.seeds)
    return (f"OMP_NUM_THREADS=1 python benchmarks/texture3d_continuity.py --model {args.model} --steps {args.steps} "
            f"--seeds {seeds} --volumes {' '.join(args.volumes)} --tag {args.tag}")


def markdown(p: dict) -> str:
    lines = [
        "# Texture continuity along z", "",
        f"Command: `{p['command']}`  ", f"Model: `{p['model']}` {p['model_note']}  ",
        f"Sampler steps {p['steps']}, seeds {p['seeds']}; imaging model: {p['imaging']}  ",
        f"Total {p['total_seconds']:.0f} s on {p['machine']} (shared 2-core CPU, 1 thread).", "",
        "Metrics (`cellcascade.evaluation.continuity`), inside cells only: **corr** = mean Pearson correlation of "
        "consecutive z-slices over the pixels of one cell in both (p10–p90 over slice pairs); **corr within** = the "
        "same after removing each cell's mean per slice (texture only); **stripe** = mean squared z-difference / "
        "mean squared lateral difference at the same physical distance (1 isotropic, > 1 stripes in XZ/YZ, < 1 "
        "smoother along z).", "",
        "## Real and reference volumes", "",
        "| volume | corr (p10–p90) | corr within | stripe |", "|---|---|---|---|",
    ]
    for name, s in p["real"].items():
        lines.append(f"| {name} | {s['adjacent_corr']:.3f} ({s['pair_corr_p10']:.2f}–{s['pair_corr_p90']:.2f}) | "
                     f"{s['adjacent_corr_within_cell']:.3f} | {s['stripe']:.2f} |")
    lines += ["", "## Synthetic volumes (mean ± std over seeds)", "",
              "raw = texture model output; noise only = `finish_volume(axial_blur=False)` (missing camera noise, "
              "rounding); finished r = `finish_volume(axial_ratio=r)` (the missing axial blur for an axial PSF r times "
              "the lateral one, then the missing noise).", "",
              "| labels | noise scheme | " + " | ".join(f"{k} {m}" for k in KINDS for m in ("corr", "corr within", "stripe"))
              + " | s / volume |", "|---|---|" + "---|" * (3 * len(KINDS) + 1)]
    for key, s in p["synthetic"].items():
        vol, scheme = key.split(" | ")
        cells = [f"{s[f'{k}:{m}'][0]:.3f} ± {s[f'{k}:{m}'][1]:.3f}" for k in KINDS
                 for m in ("adjacent_corr", "adjacent_corr_within_cell", "stripe")]
        lines.append(f"| {vol} | {scheme} | " + " | ".join(cells) + f" | {s['seconds_per_volume']} |")
    lines.append("")
    return "\n".join(lines)


def save_preview(previews: dict, path: Path) -> None:
    """XY (middle slice) and XZ (middle row) views of every finished volume of the first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(previews)
    fig, axes = plt.subplots(len(keys), 2, figsize=(6, 1.6 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        volume, labels = previews[key]
        z = volume.shape[0] // 2
        y = int(np.argmax((labels > 0).sum(axis=(0, 2))))
        spacing = 2 if key[0].startswith("BBBC050") else 1
        low, high = np.percentile(volume, [1, 99.5])
        axes[row, 0].imshow(volume[z], cmap="gray", vmin=low, vmax=high)
        axes[row, 1].imshow(volume[:, y], cmap="gray", vmin=low, vmax=high, aspect=spacing, interpolation="nearest")
        axes[row, 0].set_ylabel(f"{key[0][:7]}\n{key[1]}", fontsize=6)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("XY (mid z)", fontsize=8)
    axes[0, 1].set_title("XZ (row with most cell voxels), finished r=1.5", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
