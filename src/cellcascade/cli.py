"""Command line: each subcommand parses its options and calls one public function.

Bad input ends with one line on stderr (``cellcascade: error: …``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

from cellcascade.devices import DEVICES, resolve_device
from cellcascade.errors import CellcascadeError

DEFAULT_MASK_MODEL = "default"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): ``cellcascade <command>: error: …`` and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], not {text}")
    return value


def _count_range(text: str) -> tuple[int, int]:
    """'40' or '40-49' -> (min, max)."""
    low, _, high = text.partition("-")
    try:
        low_i, high_i = int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, not {text!r}") from None
    if low_i < 1 or high_i < low_i:
        raise argparse.ArgumentTypeError(f"expected 1 <= MIN <= MAX, not {text!r}")
    return low_i, high_i


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same output (default 0)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run the networks: auto takes a CUDA GPU if there is one (default auto)")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="CPU threads for PyTorch (default 1: these small networks gain little from more, and on a "
                        "busy 2-core CPU two threads ran 20x slower than one)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cellcascade",
        description="Synthetic, densely annotated fluorescence microscopy from a few annotated images "
        "(cascaded diffusion models, arXiv 2411.11515).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train-masks", help="train the single-cell mask diffusion model on annotated data",
                       description="Train the single-cell mask diffusion model (stage 1) on every whole annotated cell "
                       "of DATA. Checkpoints go to OUT.checkpoint/ and an interrupted run resumes from there.")
    p.add_argument("data", help="'sample' (the embedded real nuclei image), a Cell Tracking Challenge folder, "
                   "or a folder of NAME.tif + NAME_masks.tif pairs")
    p.add_argument("--out", required=True, type=Path, help="model folder to write (must not exist)")
    p.add_argument("--crop-size", type=_positive_int, default=32, help="side of the generated masks in pixels (default 32)")
    p.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default="cpu",
                   help="network size: cpu (1.1M parameters, default) or gpu (larger; for a GPU); tiny is for tests")
    p.add_argument("--steps", type=_positive_int, default=4000, help="optimizer steps (default 4000)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="samples per step (default 32)")
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=500, help="steps between checkpoints (default 500)")
    p.add_argument("--smoothing", type=float, default=1.5,
                   help="Gaussian sigma (crop pixels) applied to generated masks before thresholding (default 1.5)")
    _add_common(p)

    p = sub.add_parser("sample-masks", help="sample single-cell masks from a mask model",
                       description="Sample single-cell binary masks from a trained mask model; writes masks.tif "
                       "(N, S, S) uint8, preview.png and manifest.json into OUT.")
    _add_model(p)
    p.add_argument("--n", type=_positive_int, default=64, help="number of masks (default 64)")
    _add_sampler(p)
    _add_output(p)
    _add_common(p)

    p = sub.add_parser("populate", help="lay out synthetic cells into densely labelled 2D label images",
                       description="Sample cell shapes from a mask model and place them into H x W canvases: writes "
                       "labels/label_NNNN.tif (uint16 instance labels), preview.png and manifest.json (seeds, "
                       "configuration, per-cell table) into OUT. Image i depends only on --seed and i.")
    _add_model(p)
    p.add_argument("--n", type=_positive_int, default=4, help="number of label images (default 4)")
    p.add_argument("--size", type=_positive_int, nargs=2, default=(256, 256), metavar=("H", "W"),
                   help="image size in pixels of the training data (default 256 256)")
    _add_population_options(p)
    _add_output(p)
    _add_common(p)

    p = sub.add_parser("fit", help="train every 2D stage (masks, texture, imaging; --3d: the 3D stage too) into "
                       "one cascade model folder",
                       description="Train the mask model, the mask-conditioned texture model and fit the imaging "
                       "model on DATA, into the cascade folder OUT (cascade.json + one subfolder per stage; JSON and "
                       "safetensors only); with --3d also the multiview model of the 3D stage. Work goes to OUT.partial/; run "
                       "the same command again to resume.")
    p.add_argument("data", help="'sample', a Cell Tracking Challenge folder, or a folder of NAME.tif + NAME_masks.tif")
    p.add_argument("--out", required=True, type=Path, help="cascade folder to write (must not exist)")
    p.add_argument("--dense", action="store_true",
                   help="the annotation marks every cell, so unlabelled pixels are background (default: sparse, "
                   "unlabelled pixels are unknown; the embedded sample is always dense)")
    p.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default="cpu",
                   help="network size of both diffusion models: cpu (default) or gpu; tiny is for tests")
    p.add_argument("--crop-size", type=_positive_int, default=32, help="mask model crop side (default 32)")
    p.add_argument("--patch-size", type=_positive_int, default=64, help="texture model patch side (default 64)")
    p.add_argument("--mask-steps", type=_positive_int, default=4000, help="mask model optimizer steps (default 4000)")
    p.add_argument("--texture-steps", type=_positive_int, default=3000,
                   help="texture model optimizer steps (default 3000)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="samples per step (default 32)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 3e-4; 1e-5 for the ControlNet of --pretrained)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=500, help="steps between checkpoints (default 500)")
    p.add_argument("--pretrained", type=Path, default=None, metavar="DIR",
                   help="a local diffusers-format Stable Diffusion folder (unet/, scheduler/, safetensors): the texture "
                   "stage becomes a ControlNet trained on it with the label image as control and an empty prompt "
                   "(the paper's set-up; for GPU users). Default: a conditional UNet trained from scratch")
    p.add_argument("--3d", dest="three_d", action="store_true",
                   help="also train the 3D stage (multiview model), so that `generate --dim 3` works: from the 2D "
                   "masks through the built-in 3D shape prior, plus the cells of --masks-3d if given")
    p.add_argument("--masks-3d", type=Path, default=None, metavar="DATA3D",
                   help="optional 3D annotations for the 3D stage (a CTC folder or NAME.tif + NAME_masks.tif "
                   "volumes; only the masks are used); implies --3d")
    p.add_argument("--masks-3d-z-step", type=float, default=1.0, metavar="DZ",
                   help="z spacing of --masks-3d in xy pixels (default 1: isotropic)")
    p.add_argument("--axial-ratio", type=float, nargs=2, default=(0.6, 1.0), metavar=("MIN", "MAX"),
                   help="the 3D shape prior's cell height / xy diameter, drawn per shape from this range "
                   "(default 0.6 1.0; 1 = as high as wide)")
    p.add_argument("--views", type=_positive_int, default=8, metavar="K",
                   help="side views generated per cell by the multiview model (default 8)")
    p.add_argument("--multiview-steps", type=_positive_int, default=1500,
                   help="multiview model optimizer steps (default 1500)")
    p.add_argument("--multiview-prediction", choices=("sample", "epsilon"), default="sample",
                   help="what the multiview network learns to predict: the clean side views (sample, x0) or the "
                   "noise (epsilon) (default sample)")
    p.add_argument("--view-chords", action=argparse.BooleanOptionalAction, default=True,
                   help="give the multiview network each side view's chord profile of the 2D mask, a geometric "
                   "hint of where the cell can be (default on; --no-view-chords: the 2D mask alone)")
    _add_common(p)

    p = sub.add_parser("generate", help="generate synthetic images with dense instance labels from a cascade",
                       description="Generate N synthetic (image, labels) pairs from a cascade model folder. Writes "
                       "the pairs in --format, manifest.json (version, configuration, per-sample seeds, per-cell "
                       "tables) and preview.png (image | labels overlay). Sample i depends only on --seed and i, "
                       "also when the run is split over several processes with accelerate launch. With --dim 3: "
                       "volumes (Z, Y, X) whose cells are 2D masks lifted to 3D by the multiview model and the "
                       "surface reconstruction, textured slice by slice with z-correlated noise; 3D TIFF/CTC/OME-Zarr "
                       "with the voxel size, preview of XY, XZ and YZ slices.")
    p.add_argument("model", help=f"cascade folder written by fit, or '{DEFAULT_MASK_MODEL}' for the shipped cascade")
    p.add_argument("--n", type=_positive_int, default=4, help="number of images (default 4)")
    p.add_argument("--dim", type=int, choices=[2, 3], default=2,
                   help="2: images (Y, X); 3: volumes (Z, Y, X), for a cascade with a 3D stage (fit --3d; the "
                   "shipped one has it) (default 2)")
    p.add_argument("--size", type=_positive_int, nargs="+", default=None, metavar="N",
                   help="H W in pixels of the training data (default 256 256), or Z Y X voxels with --dim 3 "
                   "(default 32 256 256)")
    p.add_argument("--z-step", type=float, default=2.0, metavar="DZ",
                   help="--dim 3: z spacing in xy pixels of the training data (default 2)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="xy pixel size of the training data in micrometres, written to the files' metadata "
                   "(voxel size DZ*UM x UM x UM in 3D); default: none in 2D, 1 in 3D")
    p.add_argument("--multiview-steps", type=_positive_int, default=20,
                   help="--dim 3: multiview sampler steps (default 20)")
    # The default lives in cellcascade.imaging.psf.DEFAULT_AXIAL_PSF (not imported here: it would pull the imaging
    # stack into every CLI start); tests/test_cli.py checks that this help names its value.
    p.add_argument("--axial-psf", type=float, default=None, metavar="R",
                   help="--dim 3, imaging model fitted on 2D data: blur along z as an axial PSF R times as wide as the "
                   "fitted lateral one (default 1.05, calibrated so that XZ/YZ views show no slice-to-slice stripes; "
                   "larger is smoother along z; 1 = no axial blur)")
    p.add_argument("--fit-steps", type=_positive_int, default=50,
                   help="--dim 3: optimizer steps of the fast surface reconstruction per batch of cells (default 50)")
    p.add_argument("--format", choices=["tiff", "ctc", "ome-zarr"], default="tiff",
                   help="tiff: NAME.tif + NAME_masks.tif pairs; ctc: Cell Tracking Challenge layout (01/t000.tif, "
                   "01_GT/SEG/man_seg000.tif); ome-zarr: one .ome.zarr per image with labels/cells (default tiff)")
    _add_population_options(p)
    p.add_argument("--border-margin", type=int, default=0, metavar="PX",
                   help="--dim 2: build each scene PX pixels larger on every side and cut it back to --size, so that "
                   "cells cross the image border as in a microscope's field of view (cut cells keep their visible "
                   "part, pieces under 15 px are dropped; --density keeps its meaning, a --cells count is scaled to "
                   "the larger scene); about a cell radius or diameter is typical (default 0: every cell wholly "
                   "inside the image)")
    p.add_argument("--brightness-spread", type=float, default=0.0, metavar="S",
                   help="--dim 2: scale each cell's signal by its own random factor exp(N(0, S^2)) before the noise is "
                   "added, for dimmer and brighter cells than the texture model draws (domain randomisation; 0.3 "
                   "puts 90%% of the factors within 0.61-1.64) (default 0: as drawn)")
    p.add_argument("--texture-steps", type=_positive_int, default=20, help="texture sampler steps (default 20)")
    _add_output(p)
    _add_common(p)

    p = sub.add_parser("evaluate", help="compare a synthetic dataset with a real one: KID/FID, shapes, side-by-side PNG",
                       description="Compare SYNTHETIC with REAL: KID (mean ± std over subsets; the headline) and FID "
                       "on cell crops and on image tiles, with the set sizes; cell shape statistics and their "
                       "distances; touching cells (pairs per cell, intensity dip where they touch; needs a densely "
                       "annotated REAL); a side-by-side PNG. Writes evaluation.json, evaluation.md, side_by_side.png.")
    p.add_argument("real", help="real annotated data: 'sample', a CTC folder or a folder of image/mask pairs")
    p.add_argument("synthetic", help="synthetic data in the same forms (e.g. the output of generate --format tiff)")
    p.add_argument("--out", required=True, type=Path, help="folder for the report")
    p.add_argument("--crop-size", type=_positive_int, default=64, help="side of the cell crops (default 64)")
    p.add_argument("--tile-size", type=_positive_int, default=256, help="side of the image tiles (default 256)")
    p.add_argument("--max-images", type=_positive_int, default=100, help="images read per dataset (default 100)")
    p.add_argument("--max-samples", type=_positive_int, default=200,
                   help="crops and tiles per set (default 200; Inception costs about 0.1-1 s per crop on 2 cores)")
    p.add_argument("--dense-real", action="store_true",
                   help="every cell of REAL is annotated (always so for 'sample'): also compare touching cells, "
                   "which unannotated neighbours would falsify")
    _add_common(p)

    p = sub.add_parser("benchmark", help="does synthetic data help? train Cellpose on real / synthetic / both and score "
                       "it on held-out real images",
                       description="Split DATA into a training part and a held-out test part, keep an annotation "
                       "budget of about --budget cells of the training part (the rest of its annotations only "
                       "validate the number of steps), and train Cellpose 3 from scratch with the same number of "
                       "optimizer steps on real only, synthetic only and real + synthetic data; score SEG and AP@0.5 "
                       "on the test images over several seeds. Writes benchmark.md, benchmark.png, benchmark.json.")
    p.add_argument("data", help="real annotated data: 'sample', a CTC folder or a folder of image/mask pairs")
    p.add_argument("--out", required=True, type=Path, help="folder for the report")
    p.add_argument("--budget", type=_positive_int, default=15, help="annotated cells the segmenter may learn from (default 15)")
    p.add_argument("--test", default="auto",
                   help="held-out images: auto (right half of a single image, else the last image(s)), right-half, "
                   "a number of images, or comma-separated image names (default auto)")
    p.add_argument("--synthetic", type=Path, action="append", default=[],
                   help="a folder of synthetic image/mask pairs (or CTC layout); repeat for several")
    p.add_argument("--no-classic", action="store_true", help="leave out the built-in classic simulator arms")
    p.add_argument("--seeds", type=_positive_int, default=None, help="number of training seeds (default 3; quick: 1)")
    p.add_argument("--steps", type=_positive_int, default=None, help="optimizer steps of every arm (default 100)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="decay in [0, 1) of a moving average of the segmenter's weights, which its checkpoints "
                   "then hold (smooths the last steps' noise; default 0 = the raw weights)")
    p.add_argument("--tune-masks", action="store_true",
                   help="choose Cellpose's mask thresholds (cell probability 0 / 0.5 / 1, flow error 0.4 / 0.8) "
                        "together with the steps on the validation cells (default: Cellpose's 0 and 0.4)")
    p.add_argument("--quick", action="store_true", help="a CI-sized run: tiny tiles, few steps, one seed")
    _add_common(p)

    p = sub.add_parser("budget", help="write the benchmark's annotation budget patch, to fit a generator on exactly it",
                       description="Write the annotation budget that 'cellcascade benchmark' uses with the same DATA, "
                       "--budget and --test (budget.tif, budget_masks.tif, budget.json), so that a cascade fitted on "
                       "it sees no more annotations than the real-only arm: cellcascade budget DATA --out B; "
                       "cellcascade fit B --out M; cellcascade generate M --out S; cellcascade benchmark DATA "
                       "--synthetic S.")
    p.add_argument("data", help="real annotated data: 'sample', a CTC folder or a folder of image/mask pairs")
    p.add_argument("--out", required=True, type=Path, help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--budget", type=_positive_int, default=15, help="annotated cells in the budget (default 15)")
    p.add_argument("--test", default="auto", help="held-out images, as in benchmark --test (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _add_common(p)
    return parser


def _add_population_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cells", type=_count_range, default=(40, 49), metavar="N|MIN-MAX",
                   help="cells per image, a number or a range (default 40-49, as in the paper)")
    p.add_argument("--density", type=float, default=None, metavar="D",
                   help="cells per 10^4 pixels instead of --cells (the embedded sample has 4.8); with "
                   "generate --dim 3, cells per 10^6 cubic pixels (of the training data's xy pixel)")
    p.add_argument("--clustering", type=_probability, default=0.3, metavar="P",
                   help="probability in [0, 1] that a cell is placed next to an existing one: 0 scattered, "
                   "1 colonies (default 0.3)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.9, 1.1), metavar=("MIN", "MAX"),
                   help="random size factor per cell (default 0.9 1.1)")
    p.add_argument("--overlap", type=float, default=0.0, metavar="F",
                   help="fraction of a cell's pixels allowed to overlap others, in [0, 1); the cell placed later keeps "
                   "only its free pixels, so touching cells meet along a flat edge as pressed nuclei do, instead of "
                   "at a waist (default 0)")
    p.add_argument("--shapes-per-image", type=_positive_int, default=16,
                   help="masks sampled per image (per volume with --dim 3, each lifted to 3D); cells reuse them in "
                   "random poses (default 16)")
    _add_sampler(p)


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"mask model folder, or '{DEFAULT_MASK_MODEL}' for the shipped model "
                        "trained on the embedded sample")


def _add_sampler(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=_positive_int, default=20, help="mask sampler steps (default 20)")
    parser.add_argument("--sampler", choices=["ddim", "dpm"], default="ddim",
                        help="few-step sampler of the diffusion models: DDIM or DPM-Solver++ (default ddim)")
    parser.add_argument("--min-solidity", type=float, default=None, metavar="S",
                        help="redraw sampled cell masks less convex than S (area / convex hull area, in [0, 1]), "
                        "e.g. to drop the thin tails of a briefly trained mask model (default: the model's own "
                        "setting, 0 = keep every shape)")


def _apply_mask_options(pipe, args: argparse.Namespace) -> None:
    """--sampler and --min-solidity on a loaded mask pipeline."""
    pipe.use_sampler(args.sampler)
    if args.min_solidity is not None:
        if not (math.isfinite(args.min_solidity) and 0 <= args.min_solidity <= 1):
            raise CellcascadeError(f"--min-solidity must be a number in [0, 1], not {args.min_solidity}")
        pipe.register_to_config(min_solidity=float(args.min_solidity))


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (must not exist, or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def _run_train_masks(args: argparse.Namespace) -> None:
    from cellcascade.data import read_dataset
    from cellcascade.training.loop import TrainConfig
    from cellcascade.training.mask import train_mask_model

    if not args.lr > 0:
        raise CellcascadeError(f"--lr must be positive, not {args.lr}")
    items = read_dataset(args.data)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                         checkpoint_every=args.checkpoint_every, seed=args.seed)
    if args.smoothing < 0:
        raise CellcascadeError(f"--smoothing must be at least 0, not {args.smoothing}")
    train_mask_model(items, args.out, crop_size=args.crop_size, preset=args.preset, config=config,
                     device=args.device, smoothing=args.smoothing, progress=not args.quiet)
    print(f"wrote {args.out}")


def _load_mask_model(args: argparse.Namespace):
    from cellcascade.pipelines.mask import load_mask_pipeline
    from cellcascade.weights import default_mask_model

    path = default_mask_model() if args.model == DEFAULT_MASK_MODEL else Path(args.model)
    pipe = load_mask_pipeline(path, device=resolve_device(args.device))
    _apply_mask_options(pipe, args)
    return pipe


def _run_sample_masks(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from cellcascade.io.output import output_folder
    from cellcascade.io.manifest import write_manifest
    from cellcascade.io.preview import save_mask_gallery
    from cellcascade.io.tiff import write_tiff

    with output_folder(args.out, args.overwrite) as tmp:  # validates OUT before any work
        pipe = _load_mask_model(args)
        out = pipe(args.n, args.steps, generator=torch.Generator().manual_seed(args.seed), progress=not args.quiet)
        write_tiff(tmp / "masks.tif", out.masks.astype(np.uint8))
        save_mask_gallery(tmp / "preview.png", out.masks[:64], title=f"{args.n} sampled masks (seed {args.seed})")
        write_manifest(tmp / "manifest.json", command="sample-masks", config=_config(args),
                       samples=[{"file": "masks.tif", "seed": args.seed, "count": args.n, "rejected": out.rejected,
                                 "pixel_scale": out.pixel_scale}])
    print(f"wrote {args.n} masks to {args.out}")


def _run_populate(args: argparse.Namespace) -> None:
    from cellcascade.io.output import output_folder
    from cellcascade.io.manifest import write_manifest
    from cellcascade.io.preview import save_label_preview
    from cellcascade.io.tiff import write_tiff
    from cellcascade.pipelines.labels import generate_label_images

    _check_population_options(args)
    with output_folder(args.out, args.overwrite) as tmp:
        pipe = _load_mask_model(args)
        result = generate_label_images(
            pipe, args.n, tuple(args.size), cells=args.cells, density=args.density, clustering=args.clustering, scale_range=tuple(args.scale),
            overlap_tolerance=args.overlap, shapes_per_image=args.shapes_per_image, num_inference_steps=args.steps,
            seed=args.seed, progress=not args.quiet)
        (tmp / "labels").mkdir()
        samples = []
        for i, (labels, cells, seed) in enumerate(zip(result.labels, result.cells, result.seeds)):
            name = f"labels/label_{i:04d}.tif"
            write_tiff(tmp / name, labels)
            samples.append({"file": name, "seed": seed, "cells": cells})
        save_label_preview(tmp / "preview.png", result.labels[:8], titles=[f"label_{i:04d}" for i in range(len(result.labels[:8]))])
        write_manifest(tmp / "manifest.json", command="populate", config=_config(args), samples=samples)
    print(f"wrote {args.n} label images to {args.out} (preview: {args.out / 'preview.png'})")


def _check_population_options(args: argparse.Namespace) -> None:
    if args.density is not None and not args.density > 0:
        raise CellcascadeError(f"--density must be positive, not {args.density}")
    if not 0.0 <= args.overlap < 1.0:
        raise CellcascadeError(f"--overlap must be within [0, 1), not {args.overlap}")
    if not 0 < args.scale[0] <= args.scale[1]:
        raise CellcascadeError(f"--scale needs 0 < MIN <= MAX, not {args.scale[0]} {args.scale[1]}")


def _run_fit(args: argparse.Namespace) -> None:
    from cellcascade.data import read_dataset
    from cellcascade.pipelines.cascade import fit_cascade
    from cellcascade.training.loop import TrainConfig

    if args.lr is not None and not args.lr > 0:
        raise CellcascadeError(f"--lr must be positive, not {args.lr}")
    if args.pretrained is not None and not (args.pretrained / "unet").is_dir():
        raise CellcascadeError(f"{args.pretrained}: not a diffusers-format Stable Diffusion folder (unet/ missing)")
    items = read_dataset(args.data, dense=True if args.dense else None)

    def config(steps: int, lr: float) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=args.batch_size, learning_rate=args.lr or lr,
                           checkpoint_every=args.checkpoint_every, seed=args.seed)

    texture_lr = 1e-5 if args.pretrained is not None else 3e-4
    fit_cascade(items, args.out, mask_config=config(args.mask_steps, 3e-4),
                texture_config=config(args.texture_steps, texture_lr), crop_size=args.crop_size,
                patch_size=args.patch_size, preset=args.preset, device=args.device, progress=not args.quiet,
                pretrained=args.pretrained, multiview=_multiview_stage(args, config))
    print(f"wrote {args.out}")


def _multiview_stage(args: argparse.Namespace, config):
    """The 3D stage's settings from fit's options (None without --3d / --masks-3d)."""
    from cellcascade.data import read_dataset
    from cellcascade.pipelines.cascade import MultiviewStage
    from cellcascade.training.multiview import MultiviewDataConfig

    if not (args.three_d or args.masks_3d is not None):
        return None
    low, high = args.axial_ratio
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise CellcascadeError(f"--axial-ratio needs 0 < MIN <= MAX, not {low} {high}")
    dz = args.masks_3d_z_step
    if not (math.isfinite(dz) and dz > 0):
        raise CellcascadeError(f"--masks-3d-z-step must be a positive number, not {dz}")
    volumes = read_dataset(args.masks_3d, dense=True) if args.masks_3d is not None else []
    if args.masks_3d is not None and any(v.ndim != 3 for v in volumes):
        raise CellcascadeError(f"{args.masks_3d}: --masks-3d must hold 3D (Z, Y, X) annotations")
    data = MultiviewDataConfig(n_side=args.views, spacing=(dz, 1.0, 1.0), axial_ratio=(low, high), seed=args.seed)
    return MultiviewStage(data=data, config=config(args.multiview_steps, 3e-4), volumes=volumes,
                          prediction_type=args.multiview_prediction, view_chords=args.view_chords)


def _generate_shape(args: argparse.Namespace) -> tuple[int, ...]:
    """--size checked against --dim (with the defaults of each)."""
    if args.size is None:
        return (256, 256) if args.dim == 2 else (32, 256, 256)
    if len(args.size) != args.dim:
        wanted = "H W" if args.dim == 2 else "Z Y X"
        raise CellcascadeError(f"--size needs {args.dim} numbers ({wanted}) with --dim {args.dim}, got {len(args.size)}")
    if min(args.size[-2:]) < 8:
        raise CellcascadeError(f"--size: height and width must be at least 8 pixels, not {tuple(args.size)}")
    return tuple(args.size)


def _run_generate(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from cellcascade.io.dataset_writer import DatasetWriter
    from cellcascade.io.manifest import write_manifest
    from cellcascade.io.output import output_folder
    from cellcascade.imaging.psf import DEFAULT_AXIAL_PSF
    from cellcascade.io.preview import save_label_preview, save_volume_preview
    from cellcascade.pipelines.cascade import Cascade
    from cellcascade.pipelines.volume import generate_volume
    from cellcascade.weights import default_cascade

    _check_population_options(args)
    shape = _generate_shape(args)
    if args.border_margin < 0:
        raise CellcascadeError(f"--border-margin must be at least 0 pixels, not {args.border_margin}")
    if args.border_margin and args.dim == 3:
        raise CellcascadeError("--border-margin works with --dim 2 only")
    if not (math.isfinite(args.brightness_spread) and args.brightness_spread >= 0):
        raise CellcascadeError(f"--brightness-spread must be at least 0, not {args.brightness_spread}")
    if args.brightness_spread and args.dim == 3:
        raise CellcascadeError("--brightness-spread works with --dim 2 only")
    for name in ("z_step", "pixel_size", "axial_psf"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise CellcascadeError(f"--{name.replace('_', '-')} must be a positive number, not {value}")
    pixel = args.pixel_size if args.pixel_size is not None else (1.0 if args.dim == 3 else None)
    spacing = None if pixel is None else ((args.z_step * pixel, pixel, pixel) if args.dim == 3 else (pixel, pixel))
    state = PartialState(cpu=args.device == "cpu")
    device = str(state.device) if args.device != "cpu" else "cpu"
    model = default_cascade() if args.model == DEFAULT_MASK_MODEL else args.model
    cascade = Cascade.load(model, device=device)  # before OUT is touched: a bad model leaves nothing behind
    if args.dim == 3 and cascade.multiview is None:
        raise CellcascadeError(f"{model}: this cascade has no 3D stage; fit one with `cellcascade fit DATA --3d`")
    _apply_mask_options(cascade.masks, args)
    cascade.texture.use_sampler(args.sampler)
    if cascade.multiview is not None:
        cascade.multiview.use_sampler(args.sampler)

    def make(i: int):
        options = dict(seed=args.seed, cells=args.cells, density=args.density, clustering=args.clustering,
                       scale_range=tuple(args.scale), overlap_tolerance=args.overlap, mask_steps=args.steps,
                       texture_steps=args.texture_steps)
        if args.dim == 2:
            return cascade.generate(i, shape, shapes_per_image=args.shapes_per_image,
                                    border_margin=args.border_margin, brightness_spread=args.brightness_spread,
                                    **options)
        return generate_volume(cascade, i, shape, z_step=args.z_step, shapes_per_volume=args.shapes_per_image,
                               multiview_steps=args.multiview_steps, fit_steps=args.fit_steps,
                               axial_psf=DEFAULT_AXIAL_PSF if args.axial_psf is None else args.axial_psf,
                               device=device, **options)

    # Under `accelerate launch` every process takes a share of the sample indices; the main process owns OUT.
    with output_folder(args.out, args.overwrite, shared=state.num_processes > 1, is_main=state.is_main_process,
                       wait=state.wait_for_everyone) as tmp:
        writer = DatasetWriter(tmp, args.format, spacing=spacing, count=args.n)
        (tmp / ".samples").mkdir(exist_ok=True)
        with state.split_between_processes(list(range(args.n))) as indices:
            from tqdm.auto import tqdm

            for i in tqdm(indices, desc="generating", disable=args.quiet or not state.is_main_process):
                sample = make(i)
                files = writer.add(i, sample.image, sample.labels)
                record = {"index": i, **files, "seed": sample.seed, "cells": sample.cells}
                (tmp / ".samples" / f"{i:06d}.json").write_text(json.dumps(record, default=_plain_json))
                if i < (4 if args.dim == 2 else 1):
                    np.save(tmp / ".samples" / f"{i:06d}_preview.npy",
                            np.stack([sample.image.astype(np.float32), sample.labels.astype(np.float32)]))
        state.wait_for_everyone()
        if state.is_main_process:
            records = [json.loads(f.read_text()) for f in sorted((tmp / ".samples").glob("*.json"))]
            previews = [np.load(f) for f in sorted((tmp / ".samples").glob("*_preview.npy"))]
            if args.dim == 2:
                save_label_preview(tmp / "preview.png", [p[1].astype(np.uint16) for p in previews],
                                   titles=[f"#{i}" for i in range(len(previews))], images=[p[0] for p in previews],
                                   columns=2)
            else:
                save_volume_preview(tmp / "preview.png", previews[0][1].astype(np.uint16), previews[0][0],
                                    spacing=(args.z_step, 1.0, 1.0), title="#0")
            write_manifest(tmp / "manifest.json", command="generate", config=_config(args), samples=records)
            shutil.rmtree(tmp / ".samples")
    if state.is_main_process:
        kind = "images" if args.dim == 2 else "volumes"
        print(f"wrote {args.n} {kind} to {args.out} (preview: {args.out / 'preview.png'})")


def _run_evaluate(args: argparse.Namespace) -> None:
    from cellcascade.evaluation.report import evaluate_folders

    result = evaluate_folders(args.real, args.synthetic, args.out, crop_size=args.crop_size, tile_size=args.tile_size,
                              max_images=args.max_images, max_samples=args.max_samples, seed=args.seed,
                              dense_real=True if args.dense_real else None)
    print((args.out / "evaluation.md").read_text() if (args.out / "evaluation.md").exists() else result)


def _run_benchmark(args: argparse.Namespace) -> None:
    from cellcascade.evaluation.benchmark import run_benchmark

    test = _parse_test(args.test)
    seeds = None if args.seeds is None else list(range(args.seed, args.seed + args.seeds))
    run_benchmark(args.data, args.out, budget=args.budget, test=test, synthetic=args.synthetic,
                  classic=not args.no_classic, seeds=seeds, steps=args.steps, ema=args.ema,
                  tune_masks=args.tune_masks, quick=args.quick, device=args.device,
                  threads=args.threads, command="cellcascade " + " ".join(sys.argv[1:]))
    print((args.out / "benchmark.md").read_text())


def _parse_test(text: str):
    return int(text) if text.isdigit() else (text.split(",") if "," in text else text)


def _run_budget(args: argparse.Namespace) -> None:
    from cellcascade.evaluation.benchmark import export_budget

    info = export_budget(args.data, args.out, budget=args.budget, test=_parse_test(args.test), overwrite=args.overwrite)
    dense = " --dense" if info["dense"] else ""
    print(f"wrote {args.out}: {info['n_whole_cells']} whole + {info['n_cut_cells']} cut cells from {info['source']}; "
          f"next: cellcascade fit {args.out}{dense} --out MODEL")


def _plain_json(value):
    return value.item() if hasattr(value, "item") else str(value)


def _config(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("quiet",)}


COMMANDS = {
    "train-masks": _run_train_masks,
    "sample-masks": _run_sample_masks,
    "populate": _run_populate,
    "fit": _run_fit,
    "generate": _run_generate,
    "evaluate": _run_evaluate,
    "benchmark": _run_benchmark,
    "budget": _run_budget,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        COMMANDS[args.command](args)
    except CellcascadeError as exc:
        print(f"cellcascade: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cellcascade: interrupted", file=sys.stderr)
        return 130
    return 0
