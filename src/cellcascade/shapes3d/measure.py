"""Physical measurements of single-cell masks: the moment ellipse of a 2D mask, and volume / extents of a 3D mask.

All lengths are in the units of the pixel size or `spacing` (e.g. micrometres). Angles are in radians, measured in
the (y, x) array plane from +x towards +y (rows down, as the array is displayed, so clockwise on screen).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from cellcascade.data.annotated import check_spacing  # noqa: F401  (re-exported for shapes3d)
from cellcascade.errors import CellcascadeError


@dataclass(frozen=True)
class Ellipse:
    """The ellipse with the same area-weighted second moments as a 2D mask.

    Attributes
    ----------
    centre : (float, float)
        (y, x) of the mask's centroid, in pixels (array indices).
    semi_major, semi_minor : float
        Semi-axes in physical units, ``semi_major >= semi_minor``.
    angle : float
        Direction of the major axis in radians, in [0, pi), from +x towards +y.
    """

    centre: tuple[float, float]
    semi_major: float
    semi_minor: float
    angle: float


def check_mask(mask, ndim: int, name: str = "mask") -> np.ndarray:
    """`mask` as a non-empty bool array of `ndim` dims; CellcascadeError otherwise."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise CellcascadeError(f"{name} must be a bool array, got dtype {mask.dtype}")
    if mask.ndim != ndim:
        axes = "(Z, Y, X)" if ndim == 3 else "(Y, X)"
        raise CellcascadeError(f"{name} must be {ndim}D {axes}, got shape {mask.shape}")
    if not mask.any():
        raise CellcascadeError(f"{name} is empty (no True pixel)")
    return mask


def check_positive(value, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise CellcascadeError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def fit_ellipse(mask: np.ndarray, pixel_size=(1.0, 1.0)) -> Ellipse:
    """The moment ellipse of a 2D mask, in physical units.

    Each pixel is a ``dy x dx`` rectangle of uniform density, so the covariance is that of the pixel centres plus
    ``d**2 / 12`` per axis; for a filled ellipse the semi-axes are twice the square roots of its eigenvalues.

    Parameters
    ----------
    mask : ndarray bool, shape (Y, X)
        One cell (not empty).
    pixel_size : (float, float)
        (dy, dx).

    Returns
    -------
    Ellipse

    Examples
    --------
    >>> yy, xx = np.mgrid[-20:21, -20:21]
    >>> e = fit_ellipse((yy / 8.0) ** 2 + (xx / 16.0) ** 2 <= 1, pixel_size=(0.5, 0.5))
    >>> round(e.semi_major, 1), round(e.semi_minor, 1), round(e.angle, 2)
    (8.0, 3.9, 0.0)
    """
    mask = check_mask(mask, 2)
    dy, dx = check_spacing(pixel_size, 2, "pixel_size")
    yy, xx = np.nonzero(mask)
    centre = (float(yy.mean()), float(xx.mean()))
    y, x = (yy - centre[0]) * dy, (xx - centre[1]) * dx
    cov = np.array([[np.mean(y * y) + dy**2 / 12, np.mean(y * x)], [np.mean(y * x), np.mean(x * x) + dx**2 / 12]])
    values, vectors = np.linalg.eigh(cov)  # ascending
    major = vectors[:, 1]  # (y, x) components
    angle = float(np.arctan2(major[0], major[1]) % np.pi)
    return Ellipse(centre, 2 * math.sqrt(values[1]), 2 * math.sqrt(values[0]), angle)


def volume(mask: np.ndarray, spacing) -> float:
    """Physical volume of a 3D mask (Z, Y, X) bool: voxels x dz dy dx."""
    mask = check_mask(mask, 3)
    return float(np.count_nonzero(mask) * np.prod(check_spacing(spacing, 3)))


def z_extent(mask: np.ndarray, spacing) -> float:
    """Height of a 3D mask (Z, Y, X) bool: number of z slices from its first to its last one, times dz."""
    mask = check_mask(mask, 3)
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    return float((slices[-1] - slices[0] + 1) * check_spacing(spacing, 3)[0])


def xy_diameter(mask: np.ndarray, spacing) -> float:
    """Equivalent diameter of the z-projection of a 3D mask (Z, Y, X) bool: ``2 sqrt(area / pi)``, physical."""
    mask = check_mask(mask, 3)
    _, dy, dx = check_spacing(spacing, 3)
    return 2 * math.sqrt(np.count_nonzero(mask.any(axis=0)) * dy * dx / math.pi)


def axial_ratio(mask: np.ndarray, spacing) -> float:
    """``z_extent / xy_diameter`` of a 3D mask (Z, Y, X) bool: 1 for a sphere, < 1 for a flattened cell."""
    return z_extent(mask, spacing) / xy_diameter(mask, spacing)


def centred_iou(a: np.ndarray, b: np.ndarray) -> float:
    """3D IoU of two masks (Z, Y, X) bool of the same voxel size after moving both centroids to one voxel.

    Each mask is pasted into a common box so that its centroid, rounded to a voxel, lies on the box's centre voxel
    (the comparison of a shape with the true one "after centring": position is not what is scored).

    Examples
    --------
    >>> cube = np.ones((2, 2, 2), bool)
    >>> centred_iou(cube, np.pad(cube, 3))
    1.0
    """
    a, b = check_mask(a, 3, "a"), check_mask(b, 3, "b")
    centres = [np.floor(np.argwhere(m).mean(axis=0) + 0.5).astype(int) for m in (a, b)]  # halves round up alike
    # half-size of the box: the farthest any voxel lies from its mask's centroid, per axis
    half = np.max([np.maximum(c, np.array(m.shape) - 1 - c) for m, c in zip((a, b), centres)], axis=0)
    boxes = []
    for mask, centre in zip((a, b), centres):
        box = np.zeros(tuple(2 * half + 1), bool)
        start = half - centre
        box[tuple(slice(s, s + n) for s, n in zip(start, mask.shape))] = mask
        boxes.append(box)
    return float((boxes[0] & boxes[1]).sum() / (boxes[0] | boxes[1]).sum())
