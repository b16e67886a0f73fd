"""Recorded segmentation benchmark: does synthetic data help Cellpose on held-out real cells?

Runs :func:`cellcascade.evaluation.benchmark.run_benchmark` and copies its three outputs to
``benchmarks/results/segmentation_<tag>.{md,json,png}``; the markdown records the exact command and the wall time.

Usage::

    # the embedded sample: left half trains (budget of 15 cells), right half tests
    python benchmarks/segmentation_benchmark.py --data sample --tag sample
    # Fluo-N2DH-GOWT1 (first 2 annotated frames train, the other 4 test), where ../shared/data is present
    python benchmarks/segmentation_benchmark.py --data ../shared/data/Fluo-N2DH-GOWT1 --tag gowt1
    # a longer step budget, for arms that have not converged after the default 100 steps
    python benchmarks/segmentation_benchmark.py --data sample --tag sample_300steps --steps 300 --long-factor 2

Torch threads default to 1: on the shared 2-core machine, two threads per process ran a Cellpose training step
about ten times slower than one (measured: 15–20 s against 1.2–1.9 s for 8 tiles of 64², with other jobs running).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from cellcascade.devices import DEVICES
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.benchmark import ARM_KINDS, _fmt, run_benchmark, threshold_grid

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample", help='"sample", a CTC folder or a folder of image/mask pairs')
    parser.add_argument("--tag", default="sample", help="results/segmentation_<tag>.{md,json,png}")
    parser.add_argument("--budget", type=int, default=15)
    parser.add_argument("--test", default="auto", help='"auto", "right-half", a number of images, or comma-separated names')
    parser.add_argument("--synthetic", nargs="*", default=[], help="folders of synthetic image/mask pairs")
    parser.add_argument("--no-classic", action="store_true")
    parser.add_argument("--real-fraction", type=float, default=0.5,
                        help="real + synthetic arms: chance that a training tile comes from the real patch")
    parser.add_argument("--real-finetune-steps", type=int, default=0, metavar="N",
                        help="real + synthetic arms draw only the real patch over their last N steps: fine-tuning on "
                             "the real annotations (default 0: none; other arms unchanged)")
    parser.add_argument("--n-synthetic", type=int, default=None,
                        help="synthetic images per source (folders: a fixed random subset; default 32)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--long-factor", type=int, default=None, help="the long real-only row trains this many times --steps")
    parser.add_argument("--checkpoints", type=int, default=None, help="checkpoints per --steps (learning curve)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--tile", type=int, default=None, help="training tile side in network pixels (default 64)")
    parser.add_argument("--diam-mean", type=float, default=17.0,
                        help="cell diameter in network pixels: images are resized so cells measure this (default 17, "
                             "Cellpose's nuclei model; the sample's cells measure about 24 px)")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="decay of the segmenter's weight moving average, in [0, 1); 0 = raw weights (default)")
    parser.add_argument("--decay-steps", type=int, default=0,
                        help="Cellpose's final learning-rate decay: ten halvings spread over the last N steps of every "
                             "arm (default 0: a constant rate, so a run's checkpoints equal shorter runs); needs "
                             "--long-factor 1")
    parser.add_argument("--test-augment", action="store_true",
                        help="Cellpose's test-time augmentation (flipped overlapping tiles, averaged) on validation and test")
    parser.add_argument("--ensemble", type=int, default=1, metavar="K",
                        help="also score every arm with its K best validation checkpoints together (their network "
                             "outputs averaged, mask thresholds chosen again on validation), as the extra row "
                             "'<arm> (ensemble of K)'; default 1: none. Needs --long-factor 1")
    parser.add_argument("--tune-masks", action="store_true",
                        help="choose Cellpose's mask thresholds (cellprob, flow) with the steps on the validation cells")
    parser.add_argument("--cellprob-thresholds", type=float, nargs="+", default=None,
                        help="with --tune-masks: the cell-probability thresholds to try (default 0 0.5 1; lower "
                             "draws wider masks)")
    parser.add_argument("--flow-thresholds", type=float, nargs="+", default=None,
                        help="with --tune-masks: the flow-error thresholds to try (default 0.4 0.8)")
    parser.add_argument("--shrink-fractions", type=float, nargs="+", default=None,
                        help="with --tune-masks: shares of each predicted cell's area to remove (its outermost, most "
                             "exposed pixels: a sub-pixel boundary shift), tried with every threshold pair, each in "
                             "[0, 0.5) (default 0: none)")
    parser.add_argument("--border-paddings", type=int, nargs="+", default=None, metavar="PX",
                        help="with --tune-masks: mirror margins (pixels) around validation and test images before "
                             "the network sees them, so cells cut by the image border look whole (Cellpose pads with "
                             "zeros); tried with every threshold pair and chosen on validation; one network pass each "
                             "(default 0: none)")
    parser.add_argument("--arms", nargs="+", choices=ARM_KINDS, default=list(ARM_KINDS),
                        help="kinds of arm to train: real (the budget patch), synthetic (each source alone), mixed "
                             "(patch + each source); default all. Arms do not depend on each other, so one comparison "
                             "can be split over runs (same seeds give the same arm)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where Cellpose trains and predicts: auto takes a CUDA GPU if there is one (default "
                             "auto; the recorded results ran on the CPU)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--save-predictions", type=Path, default=None, metavar="DIR",
                        help="also write every arm's test predictions (chosen step and mask options) as label TIFFs "
                             "<arm>_seed<S>_<image>.tif into DIR (not kept by default: large, and the JSON already "
                             "holds every test cell's Jaccard index)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, metavar="DIR",
                        help="keep every arm's segmenter checkpoints in DIR (about 26 MB each); a later run that "
                             "trains an arm on the same data with the same seed, steps and segmenter settings reuses "
                             "them and only validates and tests again (e.g. with another mask grid or --ensemble). "
                             "Default: not kept")
    args = parser.parse_args(argv)
    if args.save_predictions is not None and args.save_predictions.exists() and not args.save_predictions.is_dir():
        parser.error(f"--save-predictions {args.save_predictions}: exists and is not a folder")

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("cellcascade").setLevel(logging.INFO)
    test = args.test
    if test not in ("auto", "right-half"):
        test = int(test) if test.isdigit() else test.split(",")
    command = "python benchmarks/segmentation_benchmark.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = run_benchmark(
                args.data,
                Path(tmp) / "out",
                budget=args.budget,
                test=test,
                synthetic=args.synthetic,
                classic=not args.no_classic,
                real_fraction=args.real_fraction,
                real_finetune_steps=args.real_finetune_steps,
                n_synthetic=args.n_synthetic,
                seeds=args.seeds,
                steps=args.steps,
                long_factor=args.long_factor,
                n_checkpoints=args.checkpoints,
                batch_size=args.batch_size,
                tile=args.tile,
                diam_mean=args.diam_mean,
                ema=args.ema,
                decay_steps=args.decay_steps,
                test_augment=args.test_augment,
                ensemble=args.ensemble,
                tune_masks=args.tune_masks,
                mask_threshold_grid=threshold_grid(args.cellprob_thresholds, args.flow_thresholds),
                shrink_fractions=args.shrink_fractions,
                border_paddings=args.border_paddings,
                arms=args.arms,
                quick=args.quick,
                threads=args.threads,
                save_predictions=args.save_predictions is not None,
                checkpoint_dir=args.checkpoint_dir,
                device=args.device,
                command=command,
            )
        except CellcascadeError as exc:
            parser.exit(2, f"error: {exc}\n")
        args.out.mkdir(parents=True, exist_ok=True)
        for suffix in ("md", "json", "png"):
            shutil.copyfile(Path(tmp) / "out" / f"benchmark.{suffix}", args.out / f"segmentation_{args.tag}.{suffix}")
        if args.save_predictions is not None:
            args.save_predictions.mkdir(parents=True, exist_ok=True)
            for path in sorted((Path(tmp) / "out" / "predictions").glob("*.tif")):
                shutil.copyfile(path, args.save_predictions / path.name)
    for name, s in result["summary"].items():
        print(f"{name:24s} SEG {_fmt(s, 'seg')}   AP50 {_fmt(s, 'ap50')}")
    print(f"wall time {result['wall_seconds'] / 60:.1f} min; results in {args.out}/segmentation_{args.tag}.*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
