"""Two baselines that lift a 2D cell mask to 3D without learning (issue 5): extrusion and an ellipsoid of revolution.

Both take the 2D mask at the output's xy pixel size (dy, dx) and return a bool (Z, Y, X) mask at `spacing`. The
multiview + reconstruction path must beat them on mean 3D IoU.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from cellcascade.errors import CellcascadeError
from cellcascade.shapes3d.measure import check_mask, check_positive, check_spacing, fit_ellipse, z_extent


def extrude(mask_2d: np.ndarray, height: float, spacing) -> np.ndarray:
    """The 2D mask repeated over ``max(1, round(height / dz))`` z slices.

    Parameters
    ----------
    mask_2d : ndarray bool, shape (Y, X)
        One cell, pixels of size (dy, dx).
    height : float
        Physical height (> 0), e.g. the median z extent of known cells (:func:`median_height`).
    spacing : (float, float, float)
        (dz, dy, dx).

    Returns
    -------
    ndarray bool, shape (n, Y, X)
        Volume ``n dz * area``, ``n dz`` within ``dz / 2`` of `height` (unless ``height < dz / 2``).

    Examples
    --------
    >>> extrude(np.ones((3, 4), bool), height=5.0, spacing=(2.0, 1.0, 1.0)).shape
    (2, 3, 4)
    """
    mask_2d = check_mask(mask_2d, 2, "mask_2d")
    dz = check_spacing(spacing, 3)[0]
    slices = max(1, int(round(check_positive(height, "height") / dz)))
    return np.repeat(mask_2d[None], slices, axis=0)


def ellipsoid(semi_axes, angle: float, spacing) -> np.ndarray:
    """Voxels whose centres lie in an ellipsoid with one axis along z, centred on a voxel.

    Parameters
    ----------
    semi_axes : (float, float, float)
        (c, a, b): along z, along the in-plane direction `angle`, and across it; physical units, > 0.
    angle : float
        Radians from +x towards +y.
    spacing : (float, float, float)
        (dz, dy, dx).

    Returns
    -------
    ndarray bool, shape (Z, Y, X)
        Cropped to its bounding box; never empty.
    """
    c, a, b = (check_positive(s, "semi-axis") for s in semi_axes)
    spacing = check_spacing(spacing, 3)
    sin, cos = math.sin(angle), math.cos(angle)
    reach = (c, math.hypot(a * sin, b * cos), math.hypot(a * cos, b * sin))  # half extents along z, y, x
    half = [int(math.floor(r / s)) + 1 for r, s in zip(reach, spacing)]
    z, y, x = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij", sparse=True)
    along, across = x * cos + y * sin, -x * sin + y * cos
    mask = (z / c) ** 2 + (along / a) ** 2 + (across / b) ** 2 <= 1
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    return mask[box]


def ellipsoid_of_revolution(mask_2d: np.ndarray, spacing, z_semi_axis: float | None = None) -> np.ndarray:
    """The ellipsoid through the 2D mask's moment ellipse, its z semi-axis the minor semi-axis unless given.

    With the default z semi-axis the ellipsoid is one of revolution about the ellipse's major axis; its volume is
    ``4/3 pi a b c`` (a, b: semi-axes of :func:`~cellcascade.shapes3d.measure.fit_ellipse`), up to voxelisation.

    Parameters
    ----------
    mask_2d : ndarray bool, shape (Y, X)
        One cell, pixels of size (dy, dx).
    spacing : (float, float, float)
        (dz, dy, dx).
    z_semi_axis : float, optional
        Physical semi-axis along z.

    Returns
    -------
    ndarray bool, shape (Z, Y, X)
        Cropped to its bounding box, oriented as the mask in xy.
    """
    mask_2d = check_mask(mask_2d, 2, "mask_2d")
    spacing = check_spacing(spacing, 3)
    fit = fit_ellipse(mask_2d, spacing[1:])
    c = fit.semi_minor if z_semi_axis is None else check_positive(z_semi_axis, "z_semi_axis")
    return ellipsoid((c, fit.semi_major, fit.semi_minor), fit.angle, spacing)


def median_height(masks_3d, spacing) -> float:
    """Median z extent (physical) of 3D cell masks, each bool (Z, Y, X): the extrusion height of the baseline."""
    heights = [z_extent(mask, spacing) for mask in masks_3d]
    if not heights:
        raise CellcascadeError("median_height needs at least one 3D mask")
    return float(np.median(heights))
