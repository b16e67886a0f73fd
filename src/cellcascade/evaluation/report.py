"""How much generated data looks like real data: KID/FID on cell crops and image tiles, shape distances, a figure.

:func:`evaluate_folders` reads a real and a synthetic annotated dataset (anything
:func:`cellcascade.data.read_dataset` reads, ``"sample"`` included) and writes three files into ``out_dir``:

- ``evaluation.json``: every number (KID mean ± std, FID, set sizes, shape distances and summary statistics,
  settings);
- ``evaluation.md``: the same as small markdown tables;
- ``side_by_side.png``: real | synthetic cell crops and image tiles, each set scaled as the metric sees it.

What is compared
----------------
- **Cell crops**: a ``crop_size`` square window of the *raw image* around every annotated cell's centroid
  (the cell centred as in :func:`cellcascade.data.extract_crops`, its neighbours and background included;
  mirrored at image borders), both sets resampled with one scale factor, the one that makes the largest real
  cell fit (:func:`cellcascade.data.auto_scale`). Only the cells drawn are resampled.
  The crops of :func:`cellcascade.data.extract_crops` hold NaN where pixels are unknown; filling those (e.g.
  with the crop median) would give sparsely annotated real crops flat surroundings that densely annotated
  synthetic crops lack, and KID would penalise the synthetic set for the annotation, not the image. The raw
  window shows both sets the same way.
- **Image tiles**: non-overlapping ``tile_size`` squares of every image (the whole image where it is smaller),
  downscaled to the network's 299 × 299 input: the field of view, background and density of cells.
- **Shapes**: area, eccentricity, solidity and perimeter²/area of every annotated cell that does not touch the
  image border (:mod:`cellcascade.evaluation.shape_stats`), in image pixels.
- **Touching cells**: touching pairs per cell and the intensity dip where they touch
  (:mod:`cellcascade.evaluation.contacts`). The synthetic set is taken to be densely annotated (a generator labels
  every cell it draws); the real set is compared only where its annotation is dense (the embedded sample, or
  ``dense_real``), since unannotated neighbours would go uncounted.

3D data is compared on its Z slices that hold annotated cells. Intensities: each set is scaled by its own robust
range (see :mod:`cellcascade.evaluation.realism`). Set sizes are capped by ``max_images`` (images per dataset)
and ``max_samples`` (crops and tiles per set), drawn at random with ``seed``; the result is deterministic.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops

from cellcascade.data import AnnotatedImage, auto_scale, read_dataset
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.contacts import contact_statistics
from cellcascade.evaluation.realism import MIN_SET_SIZE, normalize_intensities, realism_scores
from cellcascade.evaluation.shape_stats import SHAPE_STATISTICS, shape_distance, shape_statistics, summarize

REPORT_FILES = ("evaluation.json", "evaluation.md", "side_by_side.png")
FIGURE_CROPS = 16  # crops per set shown in the figure (4 × 4)
FIGURE_TILES = 2  # tiles per set shown in the figure


def as_2d_items(items: list[AnnotatedImage]) -> list[AnnotatedImage]:
    """2D images unchanged; every Z slice of a 3D image that holds annotated cells becomes one 2D image."""
    out = []
    for item in items:
        if item.ndim == 2:
            out.append(item)
            continue
        for z in range(item.labels.shape[0]):
            if item.labels[z].any():
                out.append(AnnotatedImage(item.image[z], item.labels[z], f"{item.name}/z{z}", dense=item.dense))
    return out


def raw_window(image: np.ndarray, centre: tuple[float, float], size: int, scale: float) -> np.ndarray:
    """float32 (size, size): the image resampled around ``centre`` (row, col) on the grid of ``extract_crops``.

    Pixel (i, j) samples image position ``centre + ((i, j) - (size - 1) / 2) / scale`` (bilinear), mirrored
    outside the image.
    """
    offsets = (np.arange(size) - (size - 1) / 2) / scale
    rows = centre[0] + offsets[:, None] + np.zeros((1, size))
    cols = centre[1] + np.zeros((size, 1)) + offsets[None, :]
    return ndi.map_coordinates(image.astype(np.float32), [rows, cols], order=1, mode="mirror").astype(np.float32)


def cell_centres(items: list[AnnotatedImage]) -> list[tuple[int, tuple[float, float]]]:
    """(item index, centroid (row, col)) of every annotated cell, image by image, label by label.

    The centroid is the one :func:`cellcascade.data.extract_crops` centres its crops on.
    """
    centres = []
    for k, item in enumerate(items):
        centres.extend((k, tuple(float(v) for v in region.centroid)) for region in regionprops(item.labels))
    return centres


def tile_corners(items: list[AnnotatedImage], tile_size: int) -> list[tuple[int, int, int, int, int]]:
    """(item index, row, col, height, width) of non-overlapping tile_size tiles of every image.

    A tile is the whole extent of an image along an axis where the image is smaller than tile_size.
    """
    corners = []
    for k, item in enumerate(items):
        height, width = item.image.shape
        th, tw = min(tile_size, height), min(tile_size, width)
        corners.extend((k, r, c, th, tw) for r in range(0, height - th + 1, th) for c in range(0, width - tw + 1, tw))
    return corners


def _pick(values: list, limit: int, rng: np.random.Generator) -> list:
    if len(values) <= limit:
        return list(values)
    keep = np.sort(rng.choice(len(values), size=limit, replace=False))
    return [values[k] for k in keep]


def _clean(value):
    """JSON-safe: non-finite floats become None, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _read(source, what: str, max_images: int, rng: np.random.Generator, dense: bool | None) -> list[AnnotatedImage]:
    items = as_2d_items(read_dataset(source, dense=dense))
    if not items:
        raise CellcascadeError(f"{what} data {source}: no image with annotated cells")
    return _pick(items, max_images, rng)


def evaluate_folders(
    real,
    synthetic,
    out_dir,
    *,
    crop_size: int = 64,
    tile_size: int = 256,
    max_images: int = 100,
    max_samples: int = 200,
    seed: int = 0,
    subsets: int = 100,
    batch_size: int = 16,
    dense_real: bool | None = None,
) -> dict:
    """Compare a synthetic annotated dataset with a real one; write evaluation.json, evaluation.md, side_by_side.png.

    Parameters
    ----------
    real, synthetic : str or path
        Datasets readable by :func:`cellcascade.data.read_dataset` (a CTC folder, a folder of image/mask pairs,
        or ``"sample"``). 2D, or 3D (compared on annotated Z slices).
    out_dir : str or path
        Folder for the three files (created; files of the same names are replaced). Nothing is written unless
        the whole evaluation succeeds.
    crop_size : int
        Side of the cell crops, ≥ 8.
    tile_size : int
        Side of the image tiles, ≥ 16.
    max_images : int
        At most this many images (for 3D data: annotated Z slices) of each dataset (random, with ``seed``).
    max_samples : int
        At most this many crops, and this many tiles, of each set (random, with ``seed``); ≥ 2.
    seed : int
        Seed of the random choices and of the KID subsets.
    subsets : int
        Number of KID subsets.
    batch_size : int
        Images per Inception forward pass.
    dense_real : bool or None
        Whether every cell of the real data is annotated (None: the reader's default, True only for ``"sample"``);
        the touching-cell comparison needs it.

    Returns
    -------
    dict
        The content of evaluation.json: ``real`` and ``synthetic`` (source and counts), ``crops`` and ``tiles``
        (kid_mean, kid_std, fid, n_real, n_synthetic, subset_size; or ``skipped`` with the reason), ``shape``
        (``distance`` per statistic and ``real``/``synthetic`` summaries; or ``skipped``), ``contacts``
        (``real`` and ``synthetic`` :func:`~cellcascade.evaluation.contacts.contact_statistics`; or ``skipped``),
        ``settings``.
        Non-finite numbers are written as null.

    Examples
    --------
    >>> result = evaluate_folders("sample", "out/synthetic", "out/evaluation")  # doctest: +SKIP
    >>> result["crops"]["kid_mean"]  # doctest: +SKIP
    0.0123
    """
    limits = {"crop_size": 8, "tile_size": 16, "max_images": 1, "max_samples": MIN_SET_SIZE, "subsets": 1, "batch_size": 1}
    values = dict(crop_size=crop_size, tile_size=tile_size, max_images=max_images, max_samples=max_samples,
                  subsets=subsets, batch_size=batch_size)
    for name, low in limits.items():
        value = values[name]
        if not isinstance(value, (int, np.integer)) or value < low:
            raise CellcascadeError(f"{name} must be an integer of at least {low}, not {value}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CellcascadeError(f"{out_dir}: exists and is not a folder")
    rng = np.random.default_rng(seed)
    real_items = _read(real, "real", max_images, rng, dense_real)
    synthetic_items = _read(synthetic, "synthetic", max_images, rng, True)

    scale = auto_scale(real_items, crop_size)
    crops, tiles = {}, {}
    for what, items in (("real", real_items), ("synthetic", synthetic_items)):
        crops[what] = [
            raw_window(items[k].image, centre, crop_size, scale)
            for k, centre in _pick(cell_centres(items), max_samples, rng)
        ]
        tiles[what] = [
            items[k].image[r : r + h, c : c + w].astype(np.float32)
            for k, r, c, h, w in _pick(tile_corners(items, tile_size), max_samples, rng)
        ]
    for what, found in crops.items():
        if len(found) < MIN_SET_SIZE:
            raise CellcascadeError(
                f"the {what} data has {len(found)} annotated cell(s); KID needs at least {MIN_SET_SIZE}"
            )

    kid_options = dict(subsets=subsets, batch_size=batch_size, seed=seed)
    crop_scores = realism_scores(crops["real"], crops["synthetic"], **kid_options).to_dict()
    if min(len(tiles["real"]), len(tiles["synthetic"])) >= MIN_SET_SIZE:
        tile_scores = realism_scores(tiles["real"], tiles["synthetic"], **kid_options).to_dict()
    else:
        tile_scores = {"skipped": f"KID needs at least {MIN_SET_SIZE} tiles per set; use a smaller tile_size"}

    shape_result = _shape_section(real_items, synthetic_items)
    contact_result = _contact_section(real_items, synthetic_items)

    def describe(source, items, what):
        return {
            "source": str(source),
            "images": len(items),
            "cells": int(sum(len(np.unique(item.labels)) - 1 for item in items)),
            "crops": len(crops[what]),
            "tiles": len(tiles[what]),
        }

    result = _clean(
        {
            "real": describe(real, real_items, "real"),
            "synthetic": describe(synthetic, synthetic_items, "synthetic"),
            "crops": crop_scores,
            "tiles": tile_scores,
            "shape": shape_result,
            "contacts": contact_result,
            "settings": {
                "crop_size": crop_size,
                "crop_scale": scale,
                "tile_size": tile_size,
                "max_images": max_images,
                "max_samples": max_samples,
                "seed": seed,
                "kid_subsets": subsets,
                "intensities": "each set scaled by its own 0.5-99.5th percentiles to [0, 1]",
                "crops": "raw image window around each annotated cell",
            },
        }
    )
    _write_atomically(out_dir, result, crops, tiles)
    return result


def _shape_section(real_items: list[AnnotatedImage], synthetic_items: list[AnnotatedImage]) -> dict:
    """Shape distances and summaries of the whole (not border-cut) cells of both sets, or the reason to skip."""
    shapes = {}
    for what, items in (("real", real_items), ("synthetic", synthetic_items)):
        per_image = [shape_statistics(item.labels, exclude_border=True) for item in items]
        shapes[what] = {name: np.concatenate([s[name] for s in per_image]) for name in SHAPE_STATISTICS}
    counts = {what: len(s["area"]) for what, s in shapes.items()}
    if min(counts.values()) < 2:
        return {"skipped": f"shape distances need at least 2 whole (not border-cut) cells per set, found {counts}"}
    return {
        "distance": shape_distance(shapes["real"], shapes["synthetic"]),
        "real": summarize(shapes["real"]),
        "synthetic": summarize(shapes["synthetic"]),
    }


def _contact_section(real_items: list[AnnotatedImage], synthetic_items: list[AnnotatedImage]) -> dict:
    """Touching-cell statistics of both sets (2D images or annotated Z slices), or the reason to skip."""
    if not all(item.dense for item in real_items):
        return {"skipped": "the real annotation is sparse: touching pairs need every cell annotated (dense_real)"}
    return {"real": contact_statistics(real_items), "synthetic": contact_statistics(synthetic_items)}


def _format_scores(scores: dict) -> tuple[str, str, str]:
    if "skipped" in scores:
        return "skipped", "skipped", scores["skipped"]
    kid = "n/a" if scores["kid_mean"] is None else f"{scores['kid_mean']:.4f} ± {scores['kid_std'] or 0:.4f}"
    fid = "n/a" if scores["fid"] is None else f"{scores['fid']:.1f}"
    return kid, fid, f"{scores['n_real']} / {scores['n_synthetic']} (KID subsets of {scores['subset_size']})"


def markdown_report(result: dict) -> str:
    """The markdown text of evaluation.md for a result of :func:`evaluate_folders`."""
    lines = [
        "# Synthetic vs real data",
        "",
        f"Real: `{result['real']['source']}` ({result['real']['images']} images, {result['real']['cells']} cells). "
        f"Synthetic: `{result['synthetic']['source']}` ({result['synthetic']['images']} images, "
        f"{result['synthetic']['cells']} cells). Lower is more alike.",
        "",
        "| compared | KID (mean ± std) | FID | real / synthetic |",
        "| --- | --- | --- | --- |",
    ]
    settings = result["settings"]
    for key, title in (("crops", f"cell crops {settings['crop_size']} px"), ("tiles", f"image tiles {settings['tile_size']} px")):
        kid, fid, sizes = _format_scores(result[key])
        lines.append(f"| {title} | {kid} | {fid} | {sizes} |")
    lines += [
        "",
        "| shape statistic | real mean ± std | synthetic mean ± std | distance (W1 / real std) |",
        "| --- | --- | --- | --- |",
    ]
    shape = result["shape"]
    if "skipped" in shape:
        lines.append(f"| skipped | {shape['skipped']} | | |")
    else:
        for name in SHAPE_STATISTICS:
            real, synthetic = shape["real"][name], shape["synthetic"][name]
            distance = shape["distance"][name]
            lines.append(
                f"| {name} | {real['mean']:.3g} ± {real['std']:.3g} (n={real['n']}) | "
                f"{synthetic['mean']:.3g} ± {synthetic['std']:.3g} (n={synthetic['n']}) | "
                f"{'inf' if distance is None else f'{distance:.3f}'} |"
            )
    lines += ["", "| touching cells | real | synthetic |", "| --- | --- | --- |"]
    contacts = result.get("contacts", {"skipped": "not measured"})
    if "skipped" in contacts:
        lines.append(f"| skipped | {contacts['skipped']} | |")
    else:
        real, synthetic = contacts["real"], contacts["synthetic"]
        lines.append(f"| touching pairs per cell | {_per_cell(real)} | {_per_cell(synthetic)} |")
        lines.append(f"| dip where they touch, median (q25-q75) | {_dip(real)} | {_dip(synthetic)} |")
    lines += [
        "",
        "Dip: intensity above background at the darkest point between two touching cells' centroids over the "
        "intensity beside it (1: no visible line between them; below 1: a dark line or waist).",
        "",
        "KID: polynomial-kernel MMD² of Inception-v3 features over random subsets (unbiased; ≈ 0 for sets from one "
        "distribution; its std is 0 when the subsets are the whole sets). FID is biased on small sets: compare it "
        "only at equal set sizes. Intensities: "
        f"{result['settings']['intensities']}; crops: {result['settings']['crops']}.",
        "",
    ]
    return "\n".join(lines)


def _per_cell(stats: dict) -> str:
    value = stats["pairs_per_cell"]
    return "n/a" if value is None else f"{value:.3f} ({stats['pairs']} pairs / {stats['cells']} cells)"


def _dip(stats: dict) -> str:
    dip = stats["dip"]
    if dip["median"] is None:
        return "n/a (no pair)"
    return f"{dip['median']:.3f} ({dip['q25']:.3f}-{dip['q75']:.3f}, n={dip['n']})"


def _draw_figure(path: Path, crops: dict, tiles: dict) -> None:
    """side_by_side.png: 4×4 real crops | 4×4 synthetic crops, and below them real tiles | synthetic tiles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 9), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 2, height_ratios=(1.0, 0.55), hspace=0.12, wspace=0.06)
    for column, what in enumerate(("real", "synthetic")):
        shown = normalize_intensities(crops[what])[:FIGURE_CROPS] if len(crops[what]) >= 2 else []
        cells = grid[0, column].subgridspec(4, 4, wspace=0.03, hspace=0.03)
        for k in range(FIGURE_CROPS):
            axis = figure.add_subplot(cells[k // 4, k % 4])
            axis.set_axis_off()
            if k < len(shown):
                axis.imshow(shown[k], cmap="gray", vmin=0, vmax=1)
            if k == 1:
                axis.set_title(f"{what} cell crops ({len(crops[what])})", loc="left", fontsize=11)
        shown_tiles = normalize_intensities(tiles[what])[:FIGURE_TILES] if len(tiles[what]) >= 2 else tiles[what][:FIGURE_TILES]
        row = grid[1, column].subgridspec(1, FIGURE_TILES, wspace=0.03)
        for k in range(FIGURE_TILES):
            axis = figure.add_subplot(row[0, k])
            axis.set_axis_off()
            if k < len(shown_tiles):
                axis.imshow(shown_tiles[k], cmap="gray", vmin=0, vmax=1 if len(tiles[what]) >= 2 else None)
            if k == 0:
                axis.set_title(f"{what} image tiles ({len(tiles[what])})", loc="left", fontsize=11)
    figure.savefig(path, bbox_inches="tight")


def _write_atomically(out_dir: Path, result: dict, crops: dict, tiles: dict) -> None:
    """Write the three files into a temporary folder beside out_dir, then move them into place."""
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".evaluation-", dir=parent))
    try:
        (staging / "evaluation.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        (staging / "evaluation.md").write_text(markdown_report(result))
        _draw_figure(staging / "side_by_side.png", crops, tiles)
        out_dir.mkdir(exist_ok=True)
        for name in REPORT_FILES:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
