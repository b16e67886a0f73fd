"""The segmentation benchmark: does synthetic data help a segmenter on my cells?

:func:`run_benchmark` trains one segmenter (Cellpose 3 from scratch, :mod:`cellcascade.evaluation.segmenters`)
in several *arms* and scores each on held-out real images:

- ``real``: the annotation budget only (a patch with about `budget` annotated cells, see
  :mod:`cellcascade.evaluation.splits`);
- ``<source>``: synthetic data only, and ``real + <source>``: the budget mixed with synthetic data, for every
  synthetic source: the built-in classic simulator (:class:`cellcascade.classic.ClassicGenerator`, fitted on the
  budget patch only) and any folders of synthetic image/mask pairs;
- ``real (4× steps)``: real only, trained four times longer, to show whether real-only has converged.

Fairness rules (see the design notes):

- every arm does the same number of optimizer steps (one batch per step, whatever its number of images);
- the test images feed nothing: not the segmenter, not the generator, not the choice of training length;
- the number of steps of each arm and seed is chosen on the *validation* annotations (the training part outside
  the budget) among checkpoints along training; the learning curves are reported;
- several seeds; mean ± std over seeds; per-image scores kept.

Normalisation: every image is scaled by its own 1st and 99th intensity percentiles (Cellpose's normalisation),
except the budget patch, which is scaled like the training image it was cut from. Cell size: the segmenter
resizes images so cells measure its `diam_mean`; the diameter it assumes on validation and test images is the
one measured on the budget's cells (never on test annotations).

The real-only arm and its 4× row come from one run: the training loop has no learning-rate decay at the end, so
its checkpoints up to S steps are exactly those of a run of S steps.

Scores: SEG (Cell Tracking Challenge: mean Jaccard index over reference cells, pooled over the test images) and
AP at IoU 0.5 (TP / (TP + FP + FN), counts pooled over the test images). SEG suits sparse references; AP needs
dense ones: with sparse test annotations every detected unannotated cell counts as a false positive, so AP is a
lower bound there (flagged in the report). The validation score is SEG for sparse data and the mean of SEG and
AP for dense data (SEG alone would not see spurious objects).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile

from cellcascade.data import AnnotatedImage, read_dataset, require_ndim
from cellcascade.devices import resolve_device
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.boundaries import shrink_cells
from cellcascade.evaluation.segmentation_metrics import detection_scores, matched_size_ratios, seg_per_cell_kind
from cellcascade.evaluation.segmenters import (
    CellposeSegmenter,
    Checkpoint,
    Segmenter,
    apply_normalization,
    normalize_percentile,
    relabel,
)
from cellcascade.evaluation.splits import Budget, Split, choose_budget, split_train_test

logger = logging.getLogger(__name__)

RESULT_FILES = ("benchmark.md", "benchmark.png", "benchmark.json")
REAL = "real"
# the kinds of arm a run can train: the budget patch alone, each synthetic source alone, each source mixed with the patch
ARM_KINDS = ("real", "synthetic", "mixed")

# Defaults of a full run (measured on the embedded sample: see benchmarks/results/segmentation_sample.md) and of
# the CI smoke run.
DEFAULTS = dict(steps=100, n_checkpoints=5, long_factor=4, tile=64, batch_size=4, n_synthetic=32, seeds=(0, 1, 2))
# (cellprob_threshold, flow_threshold) pairs that `tune_masks` tries on the validation cells; Cellpose's defaults
# first, so that ties keep them. A higher flow threshold keeps masks whose flows Cellpose finds inconsistent; a higher
# cell-probability threshold draws tighter boundaries.
MASK_THRESHOLD_GRID = ((0.0, 0.4), (0.0, 0.8), (0.5, 0.4), (0.5, 0.8), (1.0, 0.4), (1.0, 0.8))
QUICK = dict(steps=4, n_checkpoints=2, long_factor=4, tile=32, batch_size=2, n_synthetic=2, seeds=(0,))


def threshold_grid(cellprob_thresholds: Sequence[float] | None = None,
                   flow_thresholds: Sequence[float] | None = None) -> list[tuple[float, float]] | None:
    """Every (cellprob_threshold, flow_threshold) pair of the two axes, Cellpose's defaults (0, 0.4) first.

    An axis left out takes its values from :data:`MASK_THRESHOLD_GRID`; both left out: ``None`` (the default grid).
    """
    if cellprob_thresholds is None and flow_thresholds is None:
        return None
    cellprob = sorted({float(c) for c in (cellprob_thresholds or [c for c, _ in MASK_THRESHOLD_GRID])})
    flow = sorted({float(f) for f in (flow_thresholds or [f for _, f in MASK_THRESHOLD_GRID])})
    pairs = [(c, f) for c in cellprob for f in flow]
    return sorted(pairs, key=lambda pair: pair != (0.0, 0.4))  # stable: the defaults first, then grid order


@dataclass
class Arm:
    """Training data of one arm: normalised images (Y, X) float32, labels, and the chance to draw each image."""

    name: str
    images: list[np.ndarray]
    labels: list[np.ndarray]
    probabilities: list[float]
    description: str
    finetune_probabilities: list[float] | None = None  # real + synthetic arms: the real patch only


@dataclass
class _Scored:
    """Pooled and per-image scores of one prediction set."""

    seg: float
    ap: float
    per_image: list[dict]
    predictions: list[np.ndarray] = field(default_factory=list)  # (Y, X) int per image; not written to JSON


def run_benchmark(
    data: str | Path | Sequence[AnnotatedImage],
    out_dir: str | Path,
    *,
    budget: int = 15,
    test: str | int | Sequence[str] = "auto",
    synthetic: Sequence[str | Path] = (),
    classic: bool = True,
    seeds: Sequence[int] | None = None,
    steps: int | None = None,
    quick: bool = False,
    n_checkpoints: int | None = None,
    long_factor: int | None = None,
    real_fraction: float = 0.5,
    real_finetune_steps: int = 0,
    n_synthetic: int | None = None,
    tile: int | None = None,
    batch_size: int | None = None,
    diam_mean: float = 17.0,
    ema: float = 0.0,
    decay_steps: int = 0,
    test_augment: bool = False,
    ensemble: int = 1,
    tune_masks: bool = False,
    mask_threshold_grid: Sequence[tuple[float, float]] | None = None,
    shrink_fractions: Sequence[float] | None = None,
    border_paddings: Sequence[int] | None = None,
    arms: Sequence[str] = ARM_KINDS,
    threads: int | None = None,
    save_predictions: bool = False,
    checkpoint_dir: str | Path | None = None,
    device: str = "cpu",
    segmenter: Segmenter | None = None,
    command: str | None = None,
) -> dict:
    """Train a segmenter on real, synthetic and real + synthetic data and score it on held-out real images.

    Parameters
    ----------
    data : path, "sample" or sequence of AnnotatedImage
        Real annotated 2D data (anything :func:`cellcascade.data.read_dataset` reads).
    out_dir : path
        Receives benchmark.md, benchmark.png and benchmark.json (written to a temporary folder first, then
        moved in; nothing is written when the input is bad).
    budget : int
        Annotated cells the user gives (a square patch of the training part, see
        :func:`~cellcascade.evaluation.splits.choose_budget`).
    test : "auto", "right-half", int or list of names
        Which real images are held out (see :func:`~cellcascade.evaluation.splits.split_train_test`).
    synthetic : sequence of paths
        Folders of synthetic image/mask pairs (or CTC layout), each one more pair of arms.
    classic : bool
        Add the classic simulator fitted on the budget patch as a synthetic source.
    seeds : sequence of int
        Training seeds (default (0, 1, 2); quick: (0,)).
    steps : int
        Optimizer steps of every arm (default 100; quick: 4). Checkpoints at `n_checkpoints` even fractions.
    quick : bool
        A CI-sized run: tiny tiles, few steps, one seed, two synthetic images. Explicit arguments still win.
    n_checkpoints : int
        Checkpoints per `steps` (the learning curve; default 5).
    long_factor : int
        The long real-only row trains this many times `steps` (default 4; 1 leaves the row out).
    real_fraction : float
        In real + synthetic arms, the chance that a training tile comes from the real patch.
    n_synthetic : int
        Synthetic images per source (the classic simulator generates them; folders: a random subset).
    tile, batch_size : int
        Training tile side and tiles per step (defaults 64 and 4).
    diam_mean : float
        Cell diameter in network pixels (images are resized to it).
    ema : float
        Decay of the segmenter's weight average in [0, 1) (0 = raw weights; see ``CellposeSegmenter``).
    real_finetune_steps : int
        Real + synthetic arms draw only the real patch over their last this many steps: fine-tuning on the real
        annotations after training on both (0 = none, the default). Checkpoints before it are those of a run
        without it; the real-only and synthetic-only arms are unchanged.
    decay_steps : int
        Cellpose's final learning-rate decay over the last this many steps of every arm (0 = none; see
        ``CellposeSegmenter``). Needs `long_factor` 1: the long real-only row reads the short one's checkpoints
        from its own run, which would then not have decayed.
    test_augment : bool
        Cellpose's test-time augmentation (flipped overlapping tiles, averaged) for validation and test.
    ensemble : int
        With K > 1, every arm also gets the row "<arm> (ensemble of K)": its K checkpoints with the best validation
        scores segment together (their network outputs averaged, as Cellpose 1–2's ``net_avg``), with mask
        options chosen again on the validation cells. The single-checkpoint rows are unchanged. Needs
        `long_factor` 1 and a segmenter with ``predict_each``.
    tune_masks : bool
        Choose Cellpose's mask thresholds (``cellprob_threshold``, ``flow_threshold``) from
        :data:`MASK_THRESHOLD_GRID` together with the checkpoint, on the same validation cells; off: Cellpose's
        defaults (0, 0.4). The test images never take part in the choice.
    mask_threshold_grid : sequence of (float, float), optional
        The (cellprob_threshold, flow_threshold) pairs that `tune_masks` tries, best first on ties (default
        :data:`MASK_THRESHOLD_GRID`); only with `tune_masks`.
    shrink_fractions : sequence of float, optional
        Shares of each predicted cell's area to remove (:func:`~cellcascade.evaluation.boundaries.shrink_cells`, a
        sub-pixel boundary shift) that `tune_masks` tries with every threshold pair, each in [0, 0.5); default:
        none (0). Only with `tune_masks`.
    border_paddings : sequence of int, optional
        Mirror margins (pixels) around each validation and test image before the network sees it (``border_padding``
        of ``CellposeSegmenter.predict_each``: cells cut by the image border then look whole), tried with every
        other mask option and chosen on validation; default: none (0). Only with `tune_masks`; each costs one more
        network pass per checkpoint.
    arms : sequence of str
        The kinds of arm to train, among :data:`ARM_KINDS` ("real": the budget patch, with the long row;
        "synthetic": each source alone; "mixed": the patch + each source). Default: all; fewer split a long
        comparison over runs (the arms do not depend on each other).
    threads : int, optional
        ``torch.set_num_threads`` for the run.
    save_predictions : bool
        Also write every arm's test predictions at its chosen step and mask options to
        ``out_dir/predictions/<arm>_seed<S>_<image>.tif`` (int32 labels, the test image's shape), to look at or
        to score cell by cell (the JSON already holds every test cell's Jaccard index).
    checkpoint_dir : path, optional
        Keep every arm's checkpoints in ``checkpoint_dir/<arm key>/`` instead of deleting them. A later run whose
        arm trains on the same data with the same seed, steps and segmenter settings finds them there and skips
        its training (only validation and test are run again: another mask grid or ensemble costs minutes, not a
        retraining). The arm key is a hash of everything training depends on, so changed data never reuses
        stale weights. Default: a temporary folder, deleted.
    device : "cpu", "cuda" or "auto"
        Where the default Cellpose segmenter trains and predicts ("auto": a CUDA GPU if there is one). Part of
        the segmenter's settings, so checkpoints kept on one device are not reused on another.
    segmenter : Segmenter, optional
        Replaces the default :class:`~cellcascade.evaluation.segmenters.CellposeSegmenter` (and its `device`).
    command : str, optional
        The command line that started the run, recorded in the report.

    Returns
    -------
    dict
        Everything written to benchmark.json: config, split, budget, synthetic sources, per arm the per-seed
        learning curves, chosen steps and test scores (per image), and the summary (mean ± std over seeds).

    Examples
    --------
    >>> result = run_benchmark("sample", "bench-out", quick=True)  # doctest: +SKIP
    >>> sorted(result["summary"])  # doctest: +SKIP
    ['real', 'real (4× steps)', 'classic', 'real + classic']
    """
    started = time.time()
    preset = QUICK if quick else DEFAULTS
    seeds = tuple(int(s) for s in (preset["seeds"] if seeds is None else seeds))
    steps = int(preset["steps"] if steps is None else steps)
    n_checkpoints = int(preset["n_checkpoints"] if n_checkpoints is None else n_checkpoints)
    long_factor = int(preset["long_factor"] if long_factor is None else long_factor)
    n_synthetic = int(preset["n_synthetic"] if n_synthetic is None else n_synthetic)
    tile = int(preset["tile"] if tile is None else tile)
    batch_size = int(preset["batch_size"] if batch_size is None else batch_size)
    out_dir = Path(out_dir)

    # ---------------------------------------------------------------- validate everything before any work
    if not seeds or len(set(seeds)) != len(seeds):
        raise CellcascadeError(f"seeds must be distinct and at least one, not {list(seeds)}")
    if steps < 1:
        raise CellcascadeError(f"steps must be at least 1, not {steps}")
    if not 1 <= n_checkpoints <= steps:
        raise CellcascadeError(f"n_checkpoints must be in 1..steps ({steps}), not {n_checkpoints}")
    if long_factor < 1:
        raise CellcascadeError(f"long_factor must be at least 1, not {long_factor}")
    if not 0 <= decay_steps <= steps:
        raise CellcascadeError(f"decay_steps must be in 0..steps ({steps}), not {decay_steps}")
    if decay_steps and long_factor > 1:
        raise CellcascadeError("a final learning-rate decay (decay_steps, --decay-steps) needs long_factor 1 "
                               "(--long-factor 1): the long real-only row's run holds the short row's checkpoints")
    if not 1 <= ensemble <= n_checkpoints:
        raise CellcascadeError(f"ensemble must be in 1..n_checkpoints ({n_checkpoints}), not {ensemble}")
    if ensemble > 1 and long_factor > 1:
        raise CellcascadeError("a checkpoint ensemble (ensemble, --ensemble) needs long_factor 1 (--long-factor 1)")
    if not 0 <= real_finetune_steps < steps:
        raise CellcascadeError(f"real_finetune_steps must be in 0..steps-1 ({steps - 1}), not {real_finetune_steps}")
    if not 0 < real_fraction < 1:
        raise CellcascadeError(f"real_fraction must be strictly between 0 and 1, not {real_fraction}")
    if n_synthetic < 1:
        raise CellcascadeError(f"n_synthetic must be at least 1, not {n_synthetic}")
    if out_dir.exists() and not out_dir.is_dir():
        raise CellcascadeError(f"{out_dir}: exists and is not a folder")
    arms = tuple(dict.fromkeys(arms))
    if not arms or set(arms) - set(ARM_KINDS):
        raise CellcascadeError(f"arms must be some of {', '.join(ARM_KINDS)}, not {list(arms)}")
    if "real" not in arms and not (synthetic or classic):
        raise CellcascadeError(f"arms {list(arms)} need synthetic data: give synthetic folders or the classic generator")
    if mask_threshold_grid is not None and not tune_masks:
        raise CellcascadeError("a mask threshold grid (mask_threshold_grid, --cellprob-thresholds, --flow-thresholds) "
                               "is only used with tune_masks (--tune-masks)")
    grid = [(float(c), float(f)) for c, f in (MASK_THRESHOLD_GRID if mask_threshold_grid is None else mask_threshold_grid)]
    if not grid or len(set(grid)) != len(grid) or any(not f >= 0 for _, f in grid):
        raise CellcascadeError(f"mask_threshold_grid needs distinct (cellprob, flow >= 0) pairs, not {grid}")
    if shrink_fractions is not None and not tune_masks:
        raise CellcascadeError("shrink fractions (shrink_fractions, --shrink-fractions) are only used with tune_masks "
                               "(--tune-masks)")
    shrinks = sorted({float(f) for f in (shrink_fractions or [0.0])})
    if any(not 0 <= f < 0.5 for f in shrinks):
        raise CellcascadeError(f"shrink fractions must be in [0, 0.5), not {list(shrink_fractions)}")
    if border_paddings is not None and not tune_masks:
        raise CellcascadeError("border paddings (border_paddings, --border-paddings) are only used with tune_masks "
                               "(--tune-masks)")
    paddings = sorted(set(border_paddings or [0]))
    if any(p != int(p) or p < 0 for p in paddings):
        raise CellcascadeError(f"border paddings must be whole numbers of pixels >= 0, not {list(border_paddings)}")
    paddings = [int(p) for p in paddings]
    device = resolve_device(device)
    if segmenter is None:
        segmenter = CellposeSegmenter(diam_mean=diam_mean, tile=tile, batch_size=batch_size, ema=ema,
                                      decay_steps=decay_steps, test_augment=test_augment, device=device)
    if threads is not None and threads < 1:
        raise CellcascadeError(f"threads must be at least 1, not {threads}")
    if checkpoint_dir is not None and Path(checkpoint_dir).exists() and not Path(checkpoint_dir).is_dir():
        raise CellcascadeError(f"{checkpoint_dir}: exists and is not a folder")
    if paddings != [0] and not hasattr(segmenter, "predict_each"):
        raise CellcascadeError(f"segmenter {segmenter.name!r} has no predict_each: it cannot pad the image border")
    if ensemble > 1 and not hasattr(segmenter, "predict_each"):
        raise CellcascadeError(f"segmenter {segmenter.name!r} has no predict_each: it cannot segment with an ensemble")

    items = read_dataset(data) if isinstance(data, (str, Path)) else list(data)
    require_ndim(items, 2)
    split = split_train_test(items, test)
    chosen = choose_budget(split.train, budget, seed=0)
    folders = [_read_folder(path, n_synthetic) for path in synthetic]
    long_name = f"{REAL} ({long_factor}× steps)"
    names = [REAL] + ([long_name] if long_factor > 1 else []) + (["classic"] if classic else [])
    for folder in folders:
        folder["name"] = _unique(folder["name"], names)
        names.append(folder["name"])
    generator = _fit_classic(chosen) if classic else None

    curve = sorted({max(1, round(steps * i / n_checkpoints)) for i in range(1, n_checkpoints + 1)})
    plan = _Plan(
        segmenter=segmenter,
        split=split,
        budget=chosen,
        generator=generator,
        folders=folders,
        seeds=seeds,
        steps=steps,
        curve=curve,
        long_curve=curve + [steps * j for j in range(2, long_factor + 1)],
        long_name=long_name if long_factor > 1 else None,
        real_fraction=real_fraction,
        real_finetune_steps=real_finetune_steps,
        n_synthetic=n_synthetic,
        ensemble=ensemble,
        mask_options=_mask_options(grid, shrinks, paddings) if tune_masks else [{}],
        arm_kinds=arms,
        save_predictions=save_predictions,
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
    )
    config = {
        "data": str(data) if isinstance(data, (str, Path)) else [i.name for i in items],
        "budget": budget,
        "test": test if isinstance(test, (str, int)) else list(test),
        "synthetic": [str(p) for p in synthetic],
        "classic": classic,
        "seeds": list(seeds),
        "steps": steps,
        "checkpoints": curve,
        "long_factor": long_factor,
        "long_checkpoints": plan.long_curve if long_factor > 1 else [],
        "real_fraction": real_fraction,
        "real_finetune_steps": real_finetune_steps,
        "n_synthetic": n_synthetic,
        "ensemble": ensemble,
        "quick": quick,
        "segmenter": {"name": segmenter.name, **getattr(segmenter, "config", {})},
        "mask_threshold_grid": [list(pair) for pair in grid] if tune_masks else None,
        "shrink_fractions": shrinks if tune_masks else None,
        "border_paddings": paddings if tune_masks and paddings != [0] else None,  # None: no padding (as before)
        "arms": list(arms),
        "validation_score": "SEG" if not _all_dense(chosen.validation) else "mean of SEG and AP@0.5",
        "threads": threads,
        "command": command,
        "versions": _versions(),
    }
    logger.info("benchmark: %s; budget %s; %d test image(s)", split.rule, chosen.summary(), len(split.test))

    import torch

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        arms_out, sources_out, predictions = _run_arms(plan)
    finally:
        torch.set_num_threads(previous_threads)

    summary = {name: _summarize(entry["runs"]) for name, entry in arms_out.items()}
    result = {
        "config": config,
        "split": {
            "rule": split.rule,
            "train": [{"name": i.name, "shape": list(i.labels.shape), "dense": i.dense} for i in split.train],
            "test": [
                {"name": i.name, "shape": list(i.labels.shape), "dense": i.dense, "cells": int(i.labels.max())}
                for i in split.test
            ],
        },
        "budget": chosen.summary(),
        "synthetic_sources": sources_out,
        "ap_reference_dense": _all_dense(split.test),
        "arms": arms_out,
        "summary": summary,
        "wall_seconds": time.time() - started,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
    }
    result = _clean(result)
    _write_atomically(out_dir, result, predictions)
    return result


def export_budget(
    data: str | Path | Sequence[AnnotatedImage],
    out_dir: str | Path,
    *,
    budget: int = 15,
    test: str | int | Sequence[str] = "auto",
    overwrite: bool = False,
) -> dict:
    """Write the annotation budget that :func:`run_benchmark` uses, so a generator can be fitted on exactly it.

    The benchmark's synthetic arms are fair only if their generator saw no more annotations than the real-only
    arm: fit the cascade on this folder (``cellcascade fit OUT/ ...``), generate, and pass the result to
    ``benchmark --synthetic``. Same split and budget rule as :func:`run_benchmark` with the same `budget` and `test`.

    Writes ``budget.tif`` (raw intensities of the patch, the data's dtype, (Y, X)), ``budget_masks.tif`` (labels
    uint16 (Y, X)) and ``budget.json`` (source image, box, cell counts, whether the annotation is dense).

    Returns
    -------
    dict
        The contents of ``budget.json``.
    """
    from cellcascade.io.output import output_folder
    from cellcascade.io.tiff import write_tiff

    items = read_dataset(data) if isinstance(data, (str, Path)) else list(data)
    require_ndim(items, 2)
    split = split_train_test(items, test)
    chosen = choose_budget(split.train, budget, seed=0)
    info = {
        "data": str(data) if isinstance(data, (str, Path)) else [i.name for i in items],
        "budget": budget,
        "test": test if isinstance(test, (str, int)) else list(test),
        "split": split.rule,
        **chosen.summary(),
    }
    with output_folder(out_dir, overwrite) as tmp:
        write_tiff(tmp / "budget.tif", chosen.annotated.image)
        write_tiff(tmp / "budget_masks.tif", chosen.annotated.labels.astype(np.uint16))
        (tmp / "budget.json").write_text(json.dumps(_clean(info), indent=2))
    return info


@dataclass
class _Plan:
    """Everything the training loop needs, validated."""

    segmenter: Segmenter
    split: Split
    budget: Budget
    generator: object | None
    folders: list[dict]
    seeds: tuple[int, ...]
    steps: int
    curve: list[int]
    long_curve: list[int]
    long_name: str | None
    real_fraction: float
    real_finetune_steps: int
    n_synthetic: int
    ensemble: int
    mask_options: list[dict]  # keyword arguments of `segmenter.predict` to choose from; [{}]: its defaults only
    arm_kinds: tuple[str, ...] = ARM_KINDS
    save_predictions: bool = False
    checkpoint_dir: Path | None = None  # None: a temporary folder, deleted after each arm


def _run_arms(plan: _Plan) -> tuple[dict[str, dict], list[dict], dict[str, np.ndarray]]:
    """Train and score every arm for every seed.

    Returns (arms, synthetic source descriptions, test predictions by file name: empty unless
    ``plan.save_predictions``).
    """
    segmenter, budget, split, steps = plan.segmenter, plan.budget, plan.split, plan.steps
    test_images = [apply_normalization(t.image, normalize_percentile(t.image)) for t in split.test]
    validation_images = [apply_normalization(v.image, normalize_percentile(v.image)) for v in budget.validation]
    arms_out: dict[str, dict] = {}
    sources_out: list[dict] = []
    predictions: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="cellcascade-benchmark-") as work:
        for seed in plan.seeds:
            synthetic_sets = []
            if plan.generator is not None:
                synthetic_sets.append(_classic_set(plan.generator, budget, plan.n_synthetic, segmenter, seed))
            synthetic_sets += [dict(f) for f in plan.folders]
            if seed == plan.seeds[0]:
                sources_out = [{k: v for k, v in s.items() if k not in ("images", "labels")} for s in synthetic_sets]
            for index, (kind, arm) in enumerate(_arms(budget, synthetic_sets, plan.real_fraction)):
                if kind not in plan.arm_kinds:
                    continue
                long_run = arm.name == REAL and plan.long_name is not None
                run_steps = plan.long_curve[-1] if long_run else steps
                wanted = plan.long_curve if long_run else plan.curve
                finetune = _finetune(arm, plan.real_finetune_steps)
                store = None
                if plan.checkpoint_dir is not None:
                    key = _training_key(segmenter, arm, seed, run_steps, wanted, finetune)
                    store = plan.checkpoint_dir / f"seed{seed}-{key['hash'][:16]}"
                tic = time.time()
                checkpoints = _stored_checkpoints(store, key, run_steps, wanted) if store is not None else None
                reused = checkpoints is not None
                if not reused:
                    checkpoints = segmenter.train(
                        arm.images,
                        arm.labels,
                        steps=run_steps,
                        seed=seed,
                        work_dir=store if store is not None else Path(work) / f"seed{seed}-arm{index}",
                        checkpoints=wanted,
                        probabilities=arm.probabilities,
                        **finetune,
                    )
                    if store is not None:  # written last: a stopped training leaves no stamp, so it is redone
                        files = {str(c.step): c.path.name for c in checkpoints}
                        (store / "training.json").write_text(json.dumps({**key, "files": files}, indent=1))
                train_s = time.time() - tic
                tic = time.time()
                learning = [
                    {"step": c.step, **_best_validation_scores(segmenter, c, validation_images, budget, plan.mask_options)}
                    for c in checkpoints
                ]
                rows = [(arm.name, arm.description, [p for p in learning if p["step"] <= steps], 1)]
                if long_run:
                    rows.append((plan.long_name, f"{arm.description}, {run_steps // steps}× the steps", learning, 1))
                if plan.ensemble > 1:
                    rows.append((f"{arm.name} (ensemble of {plan.ensemble})",
                                 f"{arm.description}, its {plan.ensemble} best checkpoints averaged", learning,
                                 plan.ensemble))
                tested: dict[tuple[int, ...], _Scored] = {}
                for row_name, description, points, size in rows:
                    # the `size` best validation scores, the earliest of equal scores first
                    ranked = sorted(points, key=lambda p: (-p["score"], p["step"]))[:size]
                    members = [next(c for c in checkpoints if c.step == p["step"]) for p in ranked]
                    best = ranked[0] if size == 1 else {
                        "step": max(c.step for c in members),
                        **_best_validation_scores(segmenter, members, validation_images, budget, plan.mask_options)}
                    key = tuple(sorted(c.step for c in members))
                    if key not in tested:
                        tested[key] = _test_scores(segmenter, members[0] if size == 1 else members, test_images,
                                                   split.test, budget.diameter, best.get("mask_options", {}))
                    scored = tested[key]
                    if plan.save_predictions:
                        for test_item, prediction in zip(split.test, scored.predictions):
                            predictions[prediction_file_name(row_name, seed, test_item.name)] = prediction
                    entry = arms_out.setdefault(
                        row_name,
                        {
                            "description": description,
                            "n_images": len(arm.images),
                            "step_budget": max(p["step"] for p in points),
                            "runs": [],
                        },
                    )
                    entry["runs"].append(
                        {
                            "seed": seed,
                            "learning_curve": points,
                            "chosen_step": best["step"],
                            **({"ensemble_steps": list(key), "ensemble_validation_score": best["score"]}
                               if size > 1 else {}),
                            **({"chosen_mask_options": best["mask_options"]} if "mask_options" in best else {}),
                            "test_seg": scored.seg,
                            "test_ap50": scored.ap,
                            "test_per_image": scored.per_image,
                            # reused checkpoints (checkpoint_dir): no training time to report
                            "train_seconds": None if reused else train_s,
                            "seconds_per_step": None if reused else train_s / run_steps,
                            **({"reused_checkpoints": str(store)} if reused else {}),
                        }
                    )
                eval_s = time.time() - tic
                for row_name, *_ in rows:
                    arms_out[row_name]["runs"][-1]["eval_seconds"] = eval_s
                logger.info(
                    "arm %r seed %d: %d steps %s, scored in %.0f s; chosen steps %s; test SEG %s",
                    arm.name, seed, run_steps, f"reused from {store}" if reused else f"trained in {train_s:.0f} s",
                    eval_s, [list(k) for k in tested], [round(t.seg, 3) for t in tested.values()],
                )
                if store is None:
                    for checkpoint in checkpoints:
                        checkpoint.path.unlink(missing_ok=True)
    return arms_out, sources_out, predictions


def _training_key(segmenter: Segmenter, arm: Arm, seed: int, steps: int, checkpoints: Sequence[int],
                  finetune: dict) -> dict:
    """Everything an arm's trained weights depend on, with a SHA-256 over it (the data enter as their own hash)."""
    data = hashlib.sha256()
    for image, labels in zip(arm.images, arm.labels):
        for array in (np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int64)):
            data.update(str(array.shape).encode())
            data.update(array.tobytes())
    key = {
        "segmenter": {"name": segmenter.name, **getattr(segmenter, "config", {})},
        "arm": arm.name,
        "n_images": len(arm.images),
        "data_sha256": data.hexdigest(),
        "probabilities": [float(p) for p in arm.probabilities],
        "seed": int(seed),
        "steps": int(steps),
        "checkpoints": sorted(int(c) for c in checkpoints),
        "finetune": {k: (list(map(float, v)) if isinstance(v, (list, tuple)) else v) for k, v in finetune.items()},
    }
    key["hash"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return key


def _stored_checkpoints(store: Path, key: dict, steps: int, wanted: Sequence[int]) -> list[Checkpoint] | None:
    """The checkpoints a run with the same `key` left in `store`, or None when any is missing or the key differs."""
    stamp = store / "training.json"
    if not stamp.is_file():
        return None
    stored = json.loads(stamp.read_text())
    files = stored.get("files", {})
    steps_needed = sorted({*wanted, steps})
    if stored.get("hash") != key["hash"] or any(str(s) not in files for s in steps_needed):
        return None
    checkpoints = [Checkpoint(step=s, path=store / files[str(s)]) for s in steps_needed]
    return checkpoints if all(c.path.is_file() for c in checkpoints) else None


def prediction_file_name(arm: str, seed: int, image: str) -> str:
    """Where ``save_predictions`` puts an arm's test prediction of one image and seed.

    >>> prediction_file_name("real + synthetic-a", 3, "stardist-img2d/right")
    'real_synthetic-a_seed3_stardist-img2d_right.tif'
    """
    def slug(name: str) -> str:
        return "_".join("".join(c if c.isalnum() or c in "-." else " " for c in name).split())

    return f"{slug(arm)}_seed{seed}_{slug(image)}.tif"


# -------------------------------------------------------------------- data of the arms


def _unique(name: str, taken: list[str]) -> str:
    candidate, i = name, 2
    while candidate in taken or candidate == REAL:
        candidate, i = f"{name}-{i}", i + 1
    return candidate


def _read_folder(path: str | Path, limit: int) -> dict:
    """A folder of synthetic pairs as a synthetic source (at most `limit` images, a fixed random subset)."""
    items = read_dataset(Path(path), dense=True)
    require_ndim(items, 2)
    if len(items) > limit:
        keep = np.sort(np.random.default_rng(0).choice(len(items), size=limit, replace=False))
        items = [items[i] for i in keep]
    images = [apply_normalization(i.image, normalize_percentile(i.image)) for i in items]
    return {
        "name": Path(path).name or str(path),
        "kind": "folder",
        "path": str(path),
        "n_images": len(items),
        "mean_cells": float(np.mean([i.labels.max() for i in items])),
        "images": images,
        "labels": [relabel(i.labels) for i in items],
    }


def _fit_classic(budget: Budget):
    from cellcascade.classic import ClassicGenerator

    try:
        return ClassicGenerator.fit([budget.annotated])
    except (ValueError, ArithmeticError) as exc:  # numerical failures on a small patch: say what to change
        raise CellcascadeError(
            f"the classic generator cannot be fitted on the {budget.box[2]}-px budget patch ({exc}): "
            "give a larger budget or leave the classic arm out"
        ) from exc


def _classic_set(generator, budget: Budget, n_images: int, segmenter: Segmenter, seed: int) -> dict:
    """`n_images` classic synthetic images, big enough for one training tile after resizing to the net's diameter."""
    tile = getattr(segmenter, "tile", 128)
    diam_mean = getattr(segmenter, "diam_mean", 17.0)
    side = max(32, int(math.ceil(1.5 * tile * budget.diameter / diam_mean)))
    rng = np.random.default_rng([seed, 1])
    images, labels = [], []
    attempts = 0
    while len(images) < n_images:
        attempts += 1
        if attempts > 4 * n_images:
            raise CellcascadeError("the classic generator made images without cells: cannot train on them")
        image, label = generator.generate((side, side), rng)
        if label.any():
            images.append(apply_normalization(image, normalize_percentile(image)))
            labels.append(relabel(label))
    return {
        "name": "classic",
        "kind": "classic",
        "n_images": n_images,
        "shape": [side, side],
        "mean_cells": float(np.mean([l.max() for l in labels])),
        "fitted_on": budget.annotated.name,
        "images": images,
        "labels": labels,
    }


def _arms(budget: Budget, synthetic_sets: list[dict], real_fraction: float) -> list[tuple[str, Arm]]:
    """Every arm with its kind (one of :data:`ARM_KINDS`), in a fixed order (their work folders are numbered by it)."""
    arms = [
        ("real", Arm(REAL, [budget.image], [budget.labels], [1.0],
                     f"budget patch only ({budget.n_whole} whole + {budget.n_cut} cut cells)"))
    ]
    for source in synthetic_sets:
        n = len(source["images"])
        arms.append(("synthetic", Arm(source["name"], source["images"], source["labels"], [1.0 / n] * n,
                                      f"{n} {source['kind']} synthetic images only")))
        arms.append(
            ("mixed", Arm(
                f"{REAL} + {source['name']}",
                [budget.image] + source["images"],
                [budget.labels] + source["labels"],
                [real_fraction] + [(1 - real_fraction) / n] * n,
                f"budget patch (drawn with p={real_fraction:g}) + {n} {source['kind']} synthetic images",
                finetune_probabilities=[1.0] + [0.0] * n,
            ))
        )
    return arms


def _finetune(arm: Arm, steps: int) -> dict:
    """Keyword arguments of ``Segmenter.train`` for fine-tuning `arm` on the real patch over its last `steps` steps.

    Empty when there is nothing to fine-tune, so segmenters without the option keep working.
    """
    if not steps or arm.finetune_probabilities is None:
        return {}
    return {"final_steps": steps, "final_probabilities": arm.finetune_probabilities}


# -------------------------------------------------------------------- scores


def _all_dense(items: Sequence[AnnotatedImage]) -> bool:
    return all(i.dense for i in items)


def _drop_ignored(prediction: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """Predicted objects with more than half their pixels in `ignore` removed (relabelled 1..N)."""
    counts = np.bincount(prediction.ravel(), minlength=prediction.max() + 1)
    inside = np.bincount(prediction[ignore].ravel(), minlength=prediction.max() + 1)
    drop = np.flatnonzero(2 * inside > counts)
    out = prediction.copy()
    out[np.isin(out, drop[drop > 0])] = 0
    return relabel(out)


def _pooled(references: list[np.ndarray], predictions: list[np.ndarray], names: list[str]) -> _Scored:
    per_image, jaccards, tp, fp, fn = [], [], 0, 0, 0
    for name, reference, prediction in zip(names, references, predictions):
        reference = relabel(reference)
        cells = seg_per_cell_kind(reference, prediction)
        values = [c["jaccard"] for c in cells]
        ratios = list(matched_size_ratios(reference, prediction).values())
        counts = detection_scores(reference, prediction, 0.5)
        jaccards += values
        tp, fp, fn = tp + counts["tp"], fp + counts["fp"], fn + counts["fn"]
        per_image.append(
            {
                "name": name,
                "seg": float(np.mean(values)) if values else float("nan"),
                "ap50": counts["ap"],
                "tp": counts["tp"],
                "fp": counts["fp"],
                "fn": counts["fn"],
                "reference_cells": int(reference.max()),
                "predicted_cells": int(prediction.max()),
                # median predicted / annotated size of the matched cells: > 1 when boundaries are drawn too wide
                "matched_size_ratio": float(np.median(ratios)) if ratios else float("nan"),
                # where SEG is lost: per kind of reference cell (touching the image edge, small, other)
                "cells_by_kind": _by_kind(cells),
                # every reference cell: label (in the relabelled reference), size in pixels, kind, Jaccard index
                "cells": cells,
            }
        )
    seg = float(np.mean(jaccards)) if jaccards else float("nan")
    ap = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    return _Scored(seg, float(ap), per_image, list(predictions))


def _by_kind(cells: list[dict]) -> dict:
    """Per kind of :func:`seg_per_cell_kind` ("cut", "small", "whole"): cells, their mean Jaccard, and how many
    have Jaccard 0 (missed: no predicted cell covers more than half of them)."""
    out = {}
    for kind in ("cut", "small", "whole"):
        values = [c["jaccard"] for c in cells if c["kind"] == kind]
        out[kind] = {"n": len(values), "mean_jaccard": float(np.mean(values)) if values else float("nan"),
                     "missed": sum(v == 0 for v in values)}
    return out


def _mask_options(grid: list[tuple[float, float]], shrinks: list[float], paddings: Sequence[int] = (0,)) -> list[dict]:
    """Every threshold pair with every border padding and shrink fraction (ascending: none first); no "shrink" or
    "border_padding" key for 0."""
    return [{"cellprob_threshold": c, "flow_threshold": f, **({"border_padding": p} if p else {}),
             **({"shrink": s} if s else {})}
            for c, f in grid for p in paddings for s in shrinks]


def _best_validation_scores(segmenter: Segmenter, checkpoint: Checkpoint | list[Checkpoint],
                            images: list[np.ndarray], budget: Budget,
                            options: list[dict]) -> dict:
    """The validation scores of `checkpoint` (a list: an ensemble) with the best of the `options` (the first of
    equal scores)."""
    best = None
    for option, predictions in zip(options, _segment(segmenter, checkpoint, images, budget.diameter, options)):
        scores = _validation_scores(predictions, budget)
        if best is None or scores["score"] > best["score"]:
            best = {**scores, **({"mask_options": option} if option else {})}
    return best


def _segment(segmenter: Segmenter, checkpoint: Checkpoint | list[Checkpoint],
             images: list[np.ndarray], diameter: float,
             options: list[dict]) -> list[list[np.ndarray]]:
    """Predictions with each of the `options`: keyword arguments of predict, plus an optional "shrink" fraction.

    Options that differ only in their shrink share one prediction, shrunk afterwards with
    :func:`~cellcascade.evaluation.boundaries.shrink_cells`.
    """
    predict_options = [{k: v for k, v in option.items() if k != "shrink"} for option in options]
    keys = [tuple(sorted(option.items())) for option in predict_options]
    unique = list(dict.fromkeys(keys))
    predicted = dict(zip(unique, _predict_each(segmenter, checkpoint, images, diameter, [dict(k) for k in unique])))
    return [[shrink_cells(p, option.get("shrink", 0.0)) for p in predicted[key]] for option, key in zip(options, keys)]


def _predict_each(segmenter: Segmenter, checkpoint: Checkpoint | list[Checkpoint],
                  images: list[np.ndarray], diameter: float,
                  options: list[dict]) -> list[list[np.ndarray]]:
    """Predictions with each of the `options`: in one network pass where the segmenter offers ``predict_each``."""
    if hasattr(segmenter, "predict_each"):
        return segmenter.predict_each(checkpoint, images, diameter=diameter, mask_options=options)
    return [segmenter.predict(checkpoint, images, diameter=diameter, **option) for option in options]


def _validation_scores(predictions: list[np.ndarray], budget: Budget) -> dict:
    references = [v.labels for v in budget.validation]
    names = [v.name for v in budget.validation]
    seg = _pooled(references, predictions, names).seg
    if not _all_dense(budget.validation):
        return {"seg": seg, "ap50": None, "score": seg}
    kept = [_drop_ignored(p, ignore) for p, ignore in zip(predictions, budget.validation_ignore)]
    ap = _pooled(references, kept, names).ap
    return {"seg": seg, "ap50": ap, "score": (seg + ap) / 2}


def _test_scores(segmenter: Segmenter, checkpoint: Checkpoint | list[Checkpoint],
                 images, test: list[AnnotatedImage], diameter: float,
                 options: dict | None = None) -> _Scored:
    predictions = _segment(segmenter, checkpoint, images, diameter, [options or {}])[0]
    return _pooled([t.labels for t in test], predictions, [t.name for t in test])


def _summarize(runs: list[dict]) -> dict:
    def mean_std(key):
        values = np.array([r[key] for r in runs], dtype=float)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return float(np.mean(values)), std

    seg_mean, seg_std = mean_std("test_seg")
    ap_mean, ap_std = mean_std("test_ap50")
    return {
        "seg_mean": seg_mean,
        "seg_std": seg_std,
        "ap50_mean": ap_mean,
        "ap50_std": ap_std,
        "chosen_steps": [r["chosen_step"] for r in runs],
        "seeds": [r["seed"] for r in runs],
    }


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for package in ("cellcascade", "cellpose", "torch", "numpy"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


def _clean(value):
    """JSON-ready: NaN -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, Path):
        return str(value)
    return value


# -------------------------------------------------------------------- report


def _fmt(summary: dict, score: str) -> str:
    """``mean ± std`` of `score` ("seg" or "ap50") from a :func:`_summarize` dict; one seed has no spread, so it
    says so instead of printing ``± 0.000``.

    >>> _fmt({"seg_mean": 0.8123, "seg_std": 0.0211, "seeds": [0, 1]}, "seg")
    '0.812 ± 0.021'
    >>> _fmt({"seg_mean": 0.777, "seg_std": 0.0, "seeds": [0]}, "seg")
    '0.777 (1 seed)'
    """
    mean, std = summary[f"{score}_mean"], summary[f"{score}_std"]
    if mean is None:
        return "n/a"
    if len(summary["seeds"]) == 1:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {std:.3f}"


def _chosen(run: dict) -> str:
    """A run's chosen step, with its mask options when tuned: "300", "300 (1.0, 0.8)" or "300 (1.0, 0.8, -4%)"."""
    options = run.get("chosen_mask_options")
    steps = "+".join(map(str, run.get("ensemble_steps", [run["chosen_step"]])))  # an ensemble: "660+1020+1200"
    if not options:
        return steps
    shrink = f", -{options['shrink']:.0%}" if options.get("shrink") else ""
    padding = f", mirror {options['border_padding']} px" if options.get("border_padding") else ""
    return f"{steps} ({options['cellprob_threshold']}, {options['flow_threshold']}{shrink}{padding})"


def markdown_report(result: dict) -> str:
    """The benchmark as markdown: the table of arms, the learning curves, and how it was run."""
    config, budget, summary = result["config"], result["budget"], result["summary"]
    lines = ["# Segmentation benchmark", ""]
    if config.get("command"):
        lines += ["Command:", "", "```", config["command"], "```", ""]
    lines += [
        f"- Data: `{config['data']}`; split: {result['split']['rule']}; "
        f"{len(result['split']['test'])} test image(s), {sum(t['cells'] for t in result['split']['test'])} annotated test cells.",
        f"- Annotation budget: {budget['n_whole_cells']} whole (+ {budget['n_cut_cells']} cut) cells in a "
        f"{budget['box_row_col_side'][2]}-px square of `{budget['source']}` at (row, col) = "
        f"({budget['box_row_col_side'][0]}, {budget['box_row_col_side'][1]}); cell diameter {budget['diameter_px']:.1f} px; "
        f"{'dense' if budget['dense'] else 'sparse'} annotation.",
        f"- Validation (chooses the steps): {budget['validation_cells']} held-back cells of the training part; "
        f"score = {config['validation_score']}.",
        "- Segmenter: " + ", ".join(f"{k} {v}" for k, v in config["segmenter"].items()) + ".",
    ]
    if config.get("mask_threshold_grid"):
        lines.append("- Mask thresholds (cellprob_threshold, flow_threshold) chosen with the steps on the validation "
                     f"cells from {[tuple(p) for p in config['mask_threshold_grid']]} (Cellpose's defaults: (0.0, 0.4)).")
    if config.get("shrink_fractions") and config["shrink_fractions"] != [0.0]:
        lines.append("- With each pair, a share of each predicted cell's area removed (outermost, most exposed pixels "
                     f"first), chosen from {config['shrink_fractions']}; shown as -N% after the thresholds.")
    if config.get("border_paddings") and config["border_paddings"] != [0]:
        lines.append("- With each pair, the images mirrored beyond their border by a margin chosen from "
                     f"{config['border_paddings']} px before the network sees them (masks cut back to the image); "
                     "shown as \"mirror N px\".")
    lines += [
        f"- Every arm: {config['steps']} optimizer steps (checkpoints {config['checkpoints']}); seeds {config['seeds']}; "
        f"real + synthetic arms draw the real patch with p = {config['real_fraction']}"
        + (f", and only it over their last {config['real_finetune_steps']} steps (fine-tuning)."
           if config.get("real_finetune_steps") else "."),
    ]
    for source in result["synthetic_sources"]:
        lines.append(f"- Synthetic source `{source['name']}` ({source['kind']}): {source['n_images']} images per seed, "
                     f"{source['mean_cells']:.1f} cells per image on average.")
    for note in budget["notes"]:
        lines.append(f"- Note: {note}.")
    if not result["ap_reference_dense"]:
        lines.append("- The test annotations are sparse: AP counts detected unannotated cells as false positives, "
                     "so it is a lower bound; SEG is the measure to read.")
    lines.append(f"- Wall time: {result['wall_seconds'] / 60:.1f} min on {result['host']['cpus']} CPU(s), "
                 f"torch threads = {config['threads']}.")
    lines += ["", "Test scores on the held-out real images, each seed at the checkpoint that its validation score chose:",
              "", "| arm | training images | step budget | chosen steps (per seed) | SEG (mean ± std) | AP@0.5 (mean ± std) |",
              "|---|---|---|---|---|---|"]
    for name, entry in result["arms"].items():
        s = summary[name]
        lines.append(
            f"| {name} | {entry['n_images']} | {entry['step_budget']} | {', '.join(_chosen(r) for r in entry['runs'])} | "
            f"{_fmt(s, 'seg')} | {_fmt(s, 'ap50')} |"
        )
    lines += ["", "Std over seeds (ddof = 1). Per-image and per-seed scores: benchmark.json."]
    for name, entry in result["arms"].items():
        last = sum(r["chosen_step"] == entry["step_budget"] for r in entry["runs"])
        if 2 * last > len(entry["runs"]):
            lines.append(f"- `{name}` chose its last checkpoint in {last} of {len(entry['runs'])} seeds: it may not have "
                         "converged within its step budget (see the learning curves; rerun with more steps).")
    lines += ["",
              "## Learning curves (validation score, mean over seeds)", ""]
    steps = sorted({p["step"] for e in result["arms"].values() for r in e["runs"] for p in r["learning_curve"]})
    lines += ["| arm | " + " | ".join(map(str, steps)) + " |", "|---|" + "---|" * len(steps)]
    for name, entry in result["arms"].items():
        cells = []
        for step in steps:
            values = [p["score"] for r in entry["runs"] for p in r["learning_curve"] if p["step"] == step]
            values = [v for v in values if v is not None]
            cells.append(f"{np.mean(values):.3f}" if values else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_figure(result: dict, path: Path) -> None:
    """Bar chart of test SEG and AP@0.5 per arm (error bars: std over seeds) beside the validation learning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["arms"])
    summary = result["summary"]
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "seg", "SEG"), (0.2, "ap50", "AP@0.5")):
        means = [summary[n][f"{key}_mean"] or 0.0 for n in names]
        stds = [summary[n][f"{key}_std"] or 0.0 for n in names]
        bars.bar(x + offset, means, width=0.4, yerr=stds, capsize=3, label=label)
    bars.set_xticks(x, names, rotation=20, ha="right")
    bars.set_ylim(0, 1.12)
    bars.set_yticks(np.linspace(0, 1, 6))
    bars.set_ylabel("test score (held-out real images)")
    bars.legend(loc="upper center", ncol=2)
    bars.set_title("mean ± std over seeds")
    long_rows = [n for n in names if n.startswith(f"{REAL} (")]
    for name in names:
        if name == REAL and long_rows:
            continue  # its curve is the start of the long row's
        runs = result["arms"][name]["runs"]
        steps = [p["step"] for p in runs[0]["learning_curve"]]
        values = np.array([[p["score"] if p["score"] is not None else np.nan for p in r["learning_curve"]] for r in runs])
        curves.plot(steps, np.nanmean(values, axis=0), marker="o", label=name)
    curves.axvline(result["config"]["steps"], color="grey", lw=0.8, ls="--")
    curves.set_xlabel("optimizer steps")
    curves.set_ylabel(f"validation score ({result['config']['validation_score']})")
    curves.set_ylim(0, 1)
    curves.legend()
    curves.set_title("learning curves (dashed: step budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_atomically(out_dir: Path, result: dict, predictions: dict[str, np.ndarray] | None = None) -> None:
    """Write the three files (and any predictions, into ``predictions/``) into a temporary folder beside
    `out_dir`, then move them in."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (tmp / "benchmark.json").write_text(json.dumps(result, indent=1, allow_nan=False))
        (tmp / "benchmark.md").write_text(markdown_report(result))
        draw_figure(result, tmp / "benchmark.png")
        if predictions:
            (tmp / "predictions").mkdir()
            for name, labels in predictions.items():
                tifffile.imwrite(tmp / "predictions" / name, labels.astype(np.int32), compression="zlib")
        out_dir.mkdir(exist_ok=True)
        for name in RESULT_FILES:
            os.replace(tmp / name, out_dir / name)
        if predictions:
            shutil.rmtree(out_dir / "predictions", ignore_errors=True)
            os.replace(tmp / "predictions", out_dir / "predictions")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
