"""Held-out splits and the annotation budget of the segmentation benchmark.

Three disjoint roles for the real annotations:

- **test**: held-out images (or the right half of a single image). They feed no stage: not the segmenter, not
  the generator, not the imaging fit, not the choice of training length.
- **budget**: a compact square patch of the training part holding about `k` whole annotated cells. It is all the
  annotated data that the segmenter and the synthetic-data generators may learn from.
- **validation**: the training part's annotations outside the budget (held back). They choose the number of
  training steps along the learning curve.

Sparse annotations (label 0 = unknown, e.g. Fluo-N2DH-GOWT1) need care: an unannotated nucleus inside the patch
must not be taught as background. :func:`choose_budget` replaces bright unannotated regions of the patch by
background intensities drawn from the patch's own background (see :func:`fill_unannotated`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops

from cellcascade.data.annotated import AnnotatedImage, require_ndim
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.segmenters import (
    apply_normalization,
    label_diameter,
    normalize_percentile,
    relabel,
)


@dataclass
class Split:
    """Real annotated images divided into a training part and a held-out test part (no pixel in both).

    Attributes
    ----------
    train, test : list of AnnotatedImage
        2D images (Y, X); names tell where they came from (e.g. ``"img/left"``).
    rule : str
        The rule, in words, for reports.
    """

    train: list[AnnotatedImage]
    test: list[AnnotatedImage]
    rule: str


def crop_item(item: AnnotatedImage, rows: slice, cols: slice, name: str) -> AnnotatedImage:
    """A rectangular part of an annotated image, labels relabelled to 1..N (cut cells keep their part).

    Raises CellcascadeError if the part holds no annotated pixel.
    """
    labels = item.labels[rows, cols]
    if not labels.any():
        raise CellcascadeError(f"{name}: this part of {item.name} holds no annotated cell")
    return AnnotatedImage(item.image[rows, cols].copy(), relabel(labels), name=name, dense=item.dense)


def split_train_test(items: Sequence[AnnotatedImage], test: str | int | Sequence[str] = "auto") -> Split:
    """Divide real annotated 2D images into training and test parts.

    Parameters
    ----------
    items : sequence of AnnotatedImage
        2D images.
    test : "auto", "right-half", int or sequence of str
        "right-half": every image is cut in two along X; the left half trains, the right half tests.
        int n: the last n images test, the others train. A sequence of names: those images test.
        "auto": "right-half" for a single image, else the first third of the images (at least one) trains and
        the rest tests.

    Returns
    -------
    Split

    Examples
    --------
    >>> from cellcascade.data import load_sample
    >>> split = split_train_test(load_sample())
    >>> split.train[0].image.shape, split.test[0].image.shape
    ((512, 256), (512, 256))
    """
    items = list(items)
    if not items:
        raise CellcascadeError("no annotated image to split")
    require_ndim(items, 2)
    if isinstance(test, str) and test == "auto":
        test = "right-half" if len(items) == 1 else len(items) - max(1, len(items) // 3)
    if isinstance(test, str) and test == "right-half":
        train, held = [], []
        for item in items:
            width = item.labels.shape[1]
            if width < 32:
                raise CellcascadeError(f"{item.name}: too narrow ({width} px) to cut into a left and a right half")
            half = width // 2
            train.append(crop_item(item, slice(None), slice(0, half), f"{item.name}/left"))
            held.append(crop_item(item, slice(None), slice(half, None), f"{item.name}/right"))
        return Split(train, held, "left half of each image trains, right half tests")
    if isinstance(test, str):
        raise CellcascadeError(f"test must be 'auto', 'right-half', a number of images or a list of image names, not {test!r}")
    names = [item.name for item in items]
    if isinstance(test, (int, np.integer)):
        if not 1 <= test < len(items):
            raise CellcascadeError(f"cannot hold out {test} of {len(items)} images: keep at least one for training and one for testing")
        test_names = names[len(items) - int(test):]
    else:
        test_names = list(test)
        unknown = [n for n in test_names if n not in names]
        if unknown:
            raise CellcascadeError(f"test image {unknown[0]!r} is not among the images ({', '.join(names)})")
    train = [item for item in items if item.name not in test_names]
    held = [item for item in items if item.name in test_names]
    if not train or not held:
        raise CellcascadeError("the split must leave at least one image for training and one for testing")
    return Split(
        train,
        held,
        f"images {', '.join(i.name for i in train)} train; {', '.join(i.name for i in held)} test",
    )


@dataclass
class Budget:
    """The annotated data a user would give: one square patch with about `k` whole annotated cells.

    Attributes
    ----------
    annotated : AnnotatedImage
        The patch (raw intensities, labels 1..N of its cells, whole or cut by the patch border), with the source
        image's `dense` flag: this is what the synthetic-data generators are fitted on.
    image : ndarray float32, shape (S, S)
        The patch as the segmenter learns from it: normalised with the percentiles of its source training image
        and, for sparse annotations, with bright unannotated regions replaced by background (see `filled`).
    labels : ndarray int32, shape (S, S)
        Its labels (same as ``annotated.labels``).
    filled : ndarray bool, shape (S, S)
        Pixels replaced by background values (all False for dense annotations).
    validation : list of AnnotatedImage
        The training images with every cell that touches the patch removed (held-back annotations).
    validation_ignore : list of ndarray bool
        One per validation image: where the reference says nothing (the patch and the removed cells); for
        dense references, predicted objects mostly inside it are not counted as false positives.
    source : str
        Name of the training image the patch was cut from.
    box : tuple of int
        (row, col, side) of the patch in that image.
    n_whole, n_cut : int
        Annotated cells entirely inside the patch, and cut by its border.
    diameter : float
        Cell diameter of the budget's cells (:func:`~cellcascade.evaluation.segmenters.label_diameter`), in pixels.
    """

    annotated: AnnotatedImage
    image: np.ndarray
    labels: np.ndarray
    filled: np.ndarray
    validation: list[AnnotatedImage]
    validation_ignore: list[np.ndarray]
    source: str
    box: tuple[int, int, int]
    n_whole: int
    n_cut: int
    diameter: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready description."""
        return {
            "source": self.source,
            "box_row_col_side": list(self.box),
            "n_whole_cells": self.n_whole,
            "n_cut_cells": self.n_cut,
            "diameter_px": self.diameter,
            "dense": self.annotated.dense,
            "filled_pixels": int(self.filled.sum()),
            "validation_images": [v.name for v in self.validation],
            "validation_cells": int(sum(len(np.unique(v.labels)) - 1 for v in self.validation)),
            "notes": list(self.notes),
        }


def _window_starts(length: int, side: int, stride: int) -> np.ndarray:
    starts = np.arange(0, length - side + 1, stride)
    if starts[-1] != length - side:
        starts = np.append(starts, length - side)
    return starts


def choose_patch(labels: np.ndarray, k: int, margin: int = 0, slack: float = 0.15) -> tuple[int, int, int, int, int]:
    """A compact square window of a label image that holds at least `k` whole objects, cutting few others.

    An object is whole in a window if its bounding box lies at least `margin` pixels inside the window's border;
    it is cut if it overlaps the window without being whole (its part is annotated too). Among windows at most
    ``1 + slack`` times the smallest side that holds `k` whole objects, the one with the fewest annotated
    objects (whole + cut: the annotation effort), then the smallest, then the first in raster order.

    Parameters
    ----------
    labels : ndarray int, shape (Y, X)
    k : int
        Wanted number of whole objects.
    margin : int
        Pixels of context wanted between a whole object and the window's border.
    slack : float
        How much larger than the smallest feasible window a window may be.

    Returns
    -------
    (row, col, side, n_whole, n_cut) : ints. If no window holds `k` objects, the largest square window with the
    most whole objects.

    Examples
    --------
    >>> labels = np.zeros((40, 40), int)
    >>> labels[2:6, 2:6], labels[2:6, 10:14], labels[30:34, 30:34] = 1, 2, 3
    >>> choose_patch(labels, 2)
    (0, 2, 12, 2, 0)
    """
    height, width = labels.shape
    boxes = np.array([r.bbox for r in regionprops(np.asarray(labels))], dtype=np.int64).reshape(-1, 4)
    if not len(boxes):
        raise CellcascadeError("no annotated cell to choose a budget patch from")
    r0, c0, r1, c1 = boxes.T
    smallest = int(np.maximum(r1 - r0, c1 - c0).min()) + 2 * margin  # no smaller window holds a whole cell
    best, fallback, limit = None, None, None
    for side in range(smallest, min(height, width) + 1, 2):
        if limit is not None and side > limit:
            break
        stride = max(1, side // 16)
        ys, xs = _window_starts(height, side, stride), _window_starts(width, side, stride)
        inside_y = (ys[None, :] + margin <= r0[:, None]) & (r1[:, None] <= ys[None, :] + side - margin)
        inside_x = (xs[None, :] + margin <= c0[:, None]) & (c1[:, None] <= xs[None, :] + side - margin)
        touch_y = (r0[:, None] < ys[None, :] + side) & (r1[:, None] > ys[None, :])
        touch_x = (c0[:, None] < xs[None, :] + side) & (c1[:, None] > xs[None, :])
        whole = inside_y.T.astype(np.int64) @ inside_x.astype(np.int64)  # (ny, nx)
        touching = touch_y.T.astype(np.int64) @ touch_x.astype(np.int64)  # whole + cut
        if whole.max() < k:
            iy, ix = np.unravel_index(int(np.argmax(whole)), whole.shape)
            fallback = (int(ys[iy]), int(xs[ix]), side, int(whole[iy, ix]), int(touching[iy, ix] - whole[iy, ix]))
            continue
        if limit is None:
            limit = side * (1 + slack)
        effort = np.where(whole >= k, touching, np.iinfo(np.int64).max)
        iy, ix = np.unravel_index(int(np.argmin(effort)), effort.shape)
        if best is None or effort[iy, ix] < best[0]:
            best = (int(effort[iy, ix]), (int(ys[iy]), int(xs[ix]), side, int(whole[iy, ix]), int(effort[iy, ix] - whole[iy, ix])))
    return best[1] if best is not None else fallback


def fill_unannotated(
    image: np.ndarray, labels: np.ndarray, diameter: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Replace bright unannotated regions of a sparsely annotated image by background values.

    A pixel is "unknown foreground" if the image, smoothed at a tenth of the cell diameter, is brighter than
    the background level plus a quarter of the way to the annotated cells' level, and it lies more than an
    eighth of a diameter away from every annotated cell (a rim around annotated cells is left as is, so that
    cells annotated a little tight do not get a dark ring). Components smaller than a quarter of the median
    annotated area are noise and stay. The region is dilated by a tenth of a diameter and filled with values
    drawn at random from the image's known-background pixels.

    Parameters
    ----------
    image : ndarray float32, shape (Y, X)
        Normalised intensities.
    labels : ndarray int, shape (Y, X)
        Sparse annotations (0 = unknown).
    diameter : float
        Cell diameter in pixels.
    rng : numpy Generator

    Returns
    -------
    (filled_image float32 (Y, X), filled bool (Y, X))
    """
    cells = labels > 0
    if not cells.any():
        raise CellcascadeError("cannot fill an image that holds no annotated cell")
    smooth = ndi.gaussian_filter(image.astype(np.float32), sigma=max(1.0, diameter / 10))
    rim = ndi.binary_dilation(cells, iterations=max(1, int(round(diameter / 8))))
    far = ~rim
    background_level = float(np.median(smooth[far])) if far.any() else float(smooth.min())
    cell_level = float(np.median(smooth[cells]))
    threshold = background_level + 0.25 * (cell_level - background_level)
    unknown = (smooth > threshold) & far
    components, n = ndi.label(unknown)
    if n:
        sizes = np.bincount(components.ravel())
        median_area = float(np.median(_areas(labels)))
        small = np.flatnonzero(sizes < 0.25 * median_area)
        unknown[np.isin(components, small[small > 0])] = False
    unknown = ndi.binary_dilation(unknown, iterations=max(1, int(round(diameter / 10)))) & ~cells
    background = far & ~unknown & (smooth <= threshold)
    pool = image[background] if background.any() else np.array([background_level], dtype=np.float32)
    out = image.astype(np.float32).copy()
    out[unknown] = rng.choice(pool, size=int(unknown.sum()))
    return out, unknown


def _areas(labels: np.ndarray) -> np.ndarray:
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64))[1:]
    return areas[areas > 0]


def choose_budget(train: Sequence[AnnotatedImage], k: int = 15, seed: int = 0) -> Budget:
    """Pick the annotation budget (a patch with about `k` whole cells) and the validation data from the training part.

    The patch is the most compact square holding `k` whole annotated cells with the fewest cells cut by its
    border (:func:`choose_patch`), over all training images (the smallest wins; then the first image). Whole cells
    lie at least a quarter of the image's cell diameter inside the patch border (context for the segmenter; the
    generator's fits skip cells that touch an image border). Cells cut by the patch border keep their part of the
    annotation. The validation data are the training images with every cell that touches the patch removed.

    Parameters
    ----------
    train : sequence of AnnotatedImage
        The training part of a :class:`Split` (2D).
    k : int
        Annotated cells in the budget (at least 1).
    seed : int
        Seeds the background values that fill unannotated regions (sparse data only).

    Returns
    -------
    Budget

    Examples
    --------
    >>> from cellcascade.data import load_sample
    >>> budget = choose_budget(split_train_test(load_sample()).train, k=15)
    >>> budget.n_whole, budget.n_cut, budget.box
    (15, 6, (66, 33, 188))
    """
    train = list(train)
    require_ndim(train, 2)
    if k < 1:
        raise CellcascadeError(f"the annotation budget must be at least 1 cell, not {k}")
    available = sum(len(np.unique(item.labels)) - 1 for item in train)
    if k >= available:
        raise CellcascadeError(f"the training part holds only {available} annotated cells, so a budget of {k} leaves "
                               "none for validation: lower the budget")
    choices = []
    for index, item in enumerate(train):
        margin = max(2, int(round(label_diameter(item.labels) / 4)))
        row, col, side, n_whole, n_cut = choose_patch(item.labels, k, margin)
        choices.append((n_whole < k, side, abs(n_whole - k), index, row, col, n_whole, n_cut))
    short, side, _, index, row, col, n_whole, n_cut = min(choices)
    source = train[index]
    notes = []
    if short:
        notes.append(f"no training image holds {k} whole annotated cells in one square; the budget has {n_whole}")
    window = (slice(row, row + side), slice(col, col + side))
    annotated = crop_item(source, *window, name=f"{source.name}/budget")
    n_cut = int(annotated.labels.max()) - n_whole  # by pixels (choose_patch counts overlapping bounding boxes)
    lo_hi = normalize_percentile(source.image)
    image = apply_normalization(source.image, lo_hi)[window]
    diameter = label_diameter(annotated.labels)
    if source.dense:
        filled = np.zeros(image.shape, dtype=bool)
    else:
        image, filled = fill_unannotated(image, annotated.labels, diameter, np.random.default_rng(seed))
        notes.append(
            f"sparse annotations: {int(filled.sum())} px of bright unannotated regions in the patch replaced by background values"
        )

    validation, ignore = [], []
    for i, item in enumerate(train):
        labels = item.labels.copy()
        unknown = np.zeros(labels.shape, dtype=bool)
        if i == index:
            unknown[window] = True
            touching = np.unique(labels[window])
            removed = np.isin(labels, touching[touching > 0])
            unknown |= removed
            labels[removed] = 0
        if labels.any():
            validation.append(AnnotatedImage(item.image, relabel(labels), name=item.name, dense=item.dense))
            ignore.append(unknown)
    if not validation:
        raise CellcascadeError(
            f"no annotated cell is left for validation outside the budget of {k} cells: lower the budget or give more training images"
        )
    return Budget(
        annotated=annotated,
        image=image.astype(np.float32),
        labels=annotated.labels,
        filled=filled,
        validation=validation,
        validation_ignore=ignore,
        source=source.name,
        box=(row, col, side),
        n_whole=n_whole,
        n_cut=n_cut,
        diameter=diameter,
        notes=notes,
    )
