"""Texture continuity of a volume along z: does it look like one 3D object, or like a stack of unrelated slices?

Two numbers, both computed only on voxels inside cells (where the texture model draws texture; background far from
cells is flat in real and synthetic data alike and would only dilute the measure):

* :func:`adjacent_slice_correlation` — Pearson correlation of the intensities of consecutive z-slices over the
  pixels that belong to the same cell in both slices, averaged over slice pairs. Slices textured independently
  score low; an extruded texture (every slice the same) scores 1. Between-cell brightness differences count too
  (a bright cell next to a dim one correlates across slices even with unrelated textures), unless
  ``within_cell=True``, which removes each cell's mean in each slice first and so scores the texture alone.
* :func:`stripe_score` — the stripe artefact seen in XZ/YZ views, as a ratio of high-frequency energies: the mean
  squared difference between z-neighbours (same cell) over the mean squared difference between lateral
  neighbours *at the same physical distance* dz (same cell; Y and X pooled, linearly interpolated between integer
  pixel lags when dz/dy is not an integer). An isotropic texture scores about 1; slices that do not continue into
  each other score above 1 (stripes along z in XZ/YZ); axial blur (real microscopes) or interpolated z scores
  below 1. White pixel noise adds the same amount to both energies and pulls the ratio towards 1.

Ranges measured on real and reference data (``benchmarks/texture3d_continuity.py``) are in
``benchmarks/results/texture3d_continuity.md``.
"""

from __future__ import annotations

import math

import numpy as np

from cellcascade.data.annotated import check_spacing
from cellcascade.errors import CellcascadeError

# A slice pair enters the correlation only if its cells share at least this many pixels.
MIN_PIXELS = 16


def _check_volume(volume: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    volume = np.asarray(volume)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise CellcascadeError(f"labels must be an integer array, found dtype {labels.dtype}")
    if volume.dtype.kind not in "uif":
        raise CellcascadeError(f"the volume must hold real intensities, found dtype {volume.dtype}")
    if volume.ndim != 3 or volume.shape != labels.shape:
        raise CellcascadeError(
            f"volume and labels must be 3D (Z, Y, X) arrays of one shape, not {volume.shape} and {labels.shape}"
        )
    if volume.shape[0] < 2:
        raise CellcascadeError(f"continuity needs at least 2 z-slices, found {volume.shape[0]}")
    volume = volume.astype(np.float64)
    if not np.all(np.isfinite(volume)):
        raise CellcascadeError("the volume holds NaN or infinite values")
    return volume, labels


def _remove_cell_means(volume: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Subtract from every voxel the mean of its (slice, cell); background unchanged. float64 (Z, Y, X)."""
    out = volume.copy()
    for z in range(volume.shape[0]):
        lab = labels[z].ravel()
        if not lab.any():
            continue
        sums = np.bincount(lab, weights=volume[z].ravel())
        counts = np.bincount(lab)
        means = sums / np.maximum(counts, 1)
        means[0] = 0.0
        out[z] -= means[lab].reshape(labels[z].shape)
    return out


def slice_pair_correlations(
    volume: np.ndarray, labels: np.ndarray, *, within_cell: bool = False, min_pixels: int = MIN_PIXELS
) -> np.ndarray:
    """Pearson correlation of each pair of consecutive z-slices, over the pixels of the same cell in both.

    Parameters
    ----------
    volume : ndarray (Z, Y, X), real dtype
        Intensities.
    labels : ndarray int (Z, Y, X)
        Instance labels of the volume, 0 = background.
    within_cell : bool
        Subtract each cell's mean intensity in each slice first (texture only, no cell-to-cell brightness).
    min_pixels : int
        Slice pairs with fewer shared cell pixels are skipped.

    Returns
    -------
    ndarray float64 (P,): one value per usable pair (z, z+1), in z order; pairs with fewer than `min_pixels`
    shared cell pixels or no variation are left out.
    """
    volume, labels = _check_volume(volume, labels)
    if within_cell:
        volume = _remove_cell_means(volume, labels)
    values = []
    for z in range(volume.shape[0] - 1):
        same = (labels[z] > 0) & (labels[z] == labels[z + 1])
        if same.sum() < min_pixels:
            continue
        a, b = volume[z][same], volume[z + 1][same]
        a = a - a.mean()
        b = b - b.mean()
        norm = math.sqrt(float(a @ a) * float(b @ b))
        if norm > 0:
            values.append(float(a @ b) / norm)
    return np.asarray(values, np.float64)


def adjacent_slice_correlation(
    volume: np.ndarray, labels: np.ndarray, *, within_cell: bool = False, min_pixels: int = MIN_PIXELS
) -> float:
    """Mean Pearson correlation between consecutive z-slices, over the pixels of the same cell in both.

    Parameters
    ----------
    volume : ndarray (Z, Y, X), real dtype
    labels : ndarray int (Z, Y, X), 0 = background
    within_cell, min_pixels
        As in :func:`slice_pair_correlations`.

    Returns
    -------
    float in [-1, 1]: the mean of :func:`slice_pair_correlations`.

    Examples
    --------
    >>> labels = np.zeros((4, 16, 16), np.int32); labels[:, 4:12, 4:12] = 1
    >>> texture = np.random.default_rng(0).normal(size=(16, 16))
    >>> round(adjacent_slice_correlation(np.stack([texture] * 4), labels), 6)
    1.0
    """
    values = slice_pair_correlations(volume, labels, within_cell=within_cell, min_pixels=min_pixels)
    if values.size == 0:
        raise CellcascadeError(f"no pair of consecutive z-slices shares {min_pixels} or more pixels of one cell")
    return float(values.mean())


def _squared_increments(volume: np.ndarray, labels: np.ndarray, axis: int, lag: int) -> tuple[float, int]:
    """Sum and count of (v[i + lag] - v[i])² along `axis` over voxel pairs inside one cell."""
    n = volume.shape[axis]
    if lag >= n:
        return 0.0, 0
    head = [slice(None)] * 3
    tail = [slice(None)] * 3
    head[axis] = slice(0, n - lag)
    tail[axis] = slice(lag, n)
    la, lb = labels[tuple(head)], labels[tuple(tail)]
    same = (la > 0) & (la == lb)
    diff = volume[tuple(tail)][same] - volume[tuple(head)][same]
    return float(diff @ diff), int(same.sum())


def stripe_score(volume: np.ndarray, labels: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """High-frequency energy along z relative to along Y/X at the same physical distance, inside cells.

    Parameters
    ----------
    volume : ndarray (Z, Y, X), real dtype
    labels : ndarray int (Z, Y, X), 0 = background
    spacing : (dz, dy, dx)
        Voxel size (any one unit); only the ratios dz/dy and dz/dx matter.

    Returns
    -------
    float ≥ 0: ``D_z / D_lat`` where ``D_z`` is the mean of ``(v[z+1] - v[z])²`` over z-neighbours of one cell and
    ``D_lat`` the mean squared difference between Y- and X-neighbours of one cell at a distance of dz (in pixels
    dz/dy and dz/dx; linear interpolation between integer lags, with 0 at lag 0). About 1 for an isotropic
    texture, above 1 when slices do not continue into each other (stripes in XZ/YZ views), below 1 when z is
    smoother than Y/X (axial blur, interpolated z).

    Examples
    --------
    >>> labels = np.zeros((8, 24, 24), np.int32); labels[1:7, 4:20, 4:20] = 1
    >>> noise = np.random.default_rng(0).normal(size=(8, 24, 24))
    >>> 0.8 < stripe_score(noise, labels, (1, 1, 1)) < 1.2  # white noise is isotropic
    True
    """
    volume, labels = _check_volume(volume, labels)
    spacing = check_spacing(spacing)
    dz_sum, dz_count = _squared_increments(volume, labels, 0, 1)
    if dz_count == 0:
        raise CellcascadeError("no two z-neighbouring voxels belong to one cell")
    lateral = []
    for axis, step in ((1, spacing[1]), (2, spacing[2])):
        lag = round(spacing[0] / step, 9)  # 1.6 / 0.8 is 2.0000000000000004
        low = math.floor(lag)
        frac = lag - low
        parts = []
        for k, weight in ((low, 1.0 - frac), (low + 1, frac)):
            if weight <= 0:
                continue
            if k == 0:
                parts.append((weight, 0.0, 1))
                continue
            total, count = _squared_increments(volume, labels, axis, k)
            if count == 0:
                raise CellcascadeError(
                    f"cells are narrower than the lateral lag of {lag:.2f} pixels that matches the z spacing"
                )
            parts.append((weight, total, count))
        lateral.append(sum(w * t / c for w, t, c in parts))
    lateral = float(np.mean(lateral))
    if lateral <= 0:
        raise CellcascadeError("the volume is constant along Y and X inside the cells")
    return float((dz_sum / dz_count) / lateral)


def continuity_scores(volume: np.ndarray, labels: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """All continuity numbers of a volume: ``{"adjacent_corr", "adjacent_corr_within_cell", "stripe"}``.

    volume : ndarray (Z, Y, X), real dtype; labels : ndarray int (Z, Y, X); spacing : (dz, dy, dx).
    """
    return {
        "adjacent_corr": adjacent_slice_correlation(volume, labels),
        "adjacent_corr_within_cell": adjacent_slice_correlation(volume, labels, within_cell=True),
        "stripe": stripe_score(volume, labels, spacing),
    }
