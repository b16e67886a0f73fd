"""Touching cells: how often cells touch, and how dark the image is where they touch.

A segmenter learns to split touching nuclei from the pairs it is shown. If a synthetic set holds fewer touching
pairs than the real data, or its pairs meet at a narrow waist (a deep intensity dip between them) where real nuclei
press together along a flat contact (little or no dip), a segmenter trained on it merges real touching pairs. Two
numbers per set say how far the synthetic pairs are from the real ones:

- ``pairs_per_cell``: pairs of cells that touch (face connectivity), per cell. Needs dense annotations: an
  unannotated neighbour is not counted.
- ``dip``: per touching pair, the intensity above background along the segment between the two cells' centroids:
  the minimum over its middle 30 % divided by the lower of the mean over the 25 % beside it on either side
  (:data:`PROFILE_SAMPLES` points; :func:`contact_dip`). About 1 where two nuclei meet with no visible line, below 1
  for a dark line or a waist, above 1 for a bright contact.

No library measures these (scikit-image's ``regionprops`` describes single regions), so they are written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from cellcascade.data.annotated import AnnotatedImage
from cellcascade.errors import CellcascadeError

# Points sampled along the centroid-to-centroid segment, and the slices of them that make up the two sides and the
# middle of the contact profile (fractions 0.10-0.33, 0.35-0.65 and 0.68-0.90 of the way).
PROFILE_SAMPLES = 41
_FIRST_SIDE, _MIDDLE, _SECOND_SIDE = slice(4, 14), slice(14, 27), slice(27, 37)


def touching_pairs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of labels that share an edge (face connectivity), each as (smaller id, larger id), sorted.

    Parameters
    ----------
    labels : ndarray int (Y, X)
        Instance labels, 0 = background.

    Examples
    --------
    >>> labels = np.zeros((4, 7), int); labels[1:3, 0:2] = 1; labels[1:3, 2:4] = 2; labels[1:3, 5:7] = 3
    >>> touching_pairs(labels)
    [(1, 2)]
    """
    labels = _check_labels(labels)
    pairs = set()
    for axis in range(2):
        a = np.moveaxis(labels, axis, 0)[:-1]
        b = np.moveaxis(labels, axis, 0)[1:]
        meet = (a > 0) & (b > 0) & (a != b)
        pairs.update(zip(np.minimum(a, b)[meet].tolist(), np.maximum(a, b)[meet].tolist()))
    return sorted(pairs)


def contact_dip(image: np.ndarray, labels: np.ndarray, pair: tuple[int, int], background: float) -> float:
    """Intensity dip between two touching cells along the segment joining their centroids.

    Parameters
    ----------
    image : ndarray (Y, X), any real dtype
    labels : ndarray int (Y, X)
    pair : (int, int), two label ids
    background : float
        Background level, subtracted from the image first.

    Returns
    -------
    float: min over the middle of the profile / the lower of the two side means (linear interpolation,
    :data:`PROFILE_SAMPLES` points); NaN when a side mean is not above background.

    Examples
    --------
    >>> labels = np.zeros((9, 20), int); labels[2:7, 2:10] = 1; labels[2:7, 10:18] = 2
    >>> image = 10.0 * (labels > 0); image[:, 9:11] = 5.0
    >>> round(contact_dip(image, labels, (1, 2), background=0.0), 2)
    0.5
    """
    start, end = _centroids(_check_labels(labels), list(pair))
    return _profile_dip(np.asarray(image, np.float64) - background, start, end)


def _centroids(labels: np.ndarray, ids) -> np.ndarray:
    """Centroids of the cells `ids` of `labels` (Y, X), as float64 (N, 2) rows (Y, X)."""
    return np.asarray(ndi.center_of_mass(np.ones(labels.shape), labels, ids), dtype=np.float64).reshape(-1, 2)


def _profile_dip(signal: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    """The dip of :func:`contact_dip` on a background-subtracted float image, between two (Y, X) centroids."""
    t = np.linspace(0.0, 1.0, PROFILE_SAMPLES)
    points = start[:, None] + (end - start)[:, None] * t[None, :]
    profile = ndi.map_coordinates(signal, points, order=1, mode="nearest")
    sides = min(profile[_FIRST_SIDE].mean(), profile[_SECOND_SIDE].mean())
    if not sides > 0:
        return float("nan")
    return float(profile[_MIDDLE].min() / sides)


def contact_statistics(items: Sequence[AnnotatedImage]) -> dict:
    """Touching pairs per cell and the distribution of their contact dips over 2D densely annotated images.

    Parameters
    ----------
    items : sequence of AnnotatedImage, 2D (Y, X), every one densely annotated

    Returns
    -------
    dict: ``cells``, ``pairs``, ``pairs_per_cell``, and ``dip`` with ``median``, ``q25``, ``q75`` and ``n`` (the
    pairs with a finite dip; quartiles NaN when there is none). The background level of each image is the median
    of its known-background pixels.
    """
    if not items:
        raise CellcascadeError("contact statistics need at least one annotated image")
    cells, pairs, dips = 0, 0, []
    for item in items:
        if not item.dense:
            raise CellcascadeError(f"{item.name}: contact statistics need dense annotations (every cell labelled)")
        if item.ndim != 2:
            raise CellcascadeError(f"{item.name}: contact statistics need 2D images, found shape {item.image.shape}")
        labels = np.asarray(item.labels)
        found = touching_pairs(labels)
        ids = np.unique(labels[labels > 0])
        cells += len(ids)
        pairs += len(found)
        if not found:
            continue
        background_pixels = item.image[item.known_background()]
        background = float(np.median(background_pixels)) if background_pixels.size else 0.0
        # every centroid and the background-subtracted image once per image, not once per pair
        centroids = dict(zip(ids.tolist(), _centroids(labels, ids)))
        signal = np.asarray(item.image, np.float64) - background
        dips += [_profile_dip(signal, centroids[a], centroids[b]) for a, b in found]
    dips = np.asarray([d for d in dips if np.isfinite(d)], dtype=np.float64)
    quartiles = np.percentile(dips, [25, 50, 75]) if dips.size else [float("nan")] * 3
    return {
        "cells": int(cells),
        "pairs": int(pairs),
        "pairs_per_cell": float(pairs / cells) if cells else float("nan"),
        "dip": {"median": float(quartiles[1]), "q25": float(quartiles[0]), "q75": float(quartiles[2]), "n": int(dips.size)},
    }


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise CellcascadeError(f"contact statistics need a 2D integer label image, found {labels.dtype} of shape {labels.shape}")
    return labels
