"""Label image → condition channels for the texture stage: foreground, cell boundaries, per-cell distance.

The same function serves 2D (Y, X) and 3D (Z, Y, X) label arrays: every operation is an n-dimensional
``scipy.ndimage`` one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cellcascade.errors import CellcascadeError

# The channels of :func:`label_conditions`, in order.
CONDITION_NAMES = ("foreground", "boundary", "distance")


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise CellcascadeError(f"labels must be an integer array, found dtype {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise CellcascadeError(f"labels must be 2D (Y, X) or 3D (Z, Y, X), found shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise CellcascadeError("labels must not be negative")
    return labels


def cell_boundaries(labels: np.ndarray) -> np.ndarray:
    """Cell pixels that touch (face connectivity) a pixel of another label, background included.

    Parameters
    ----------
    labels : ndarray int, shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.

    Returns
    -------
    ndarray bool, same shape. Two touching cells both get a boundary line along their contact, so they stay
    separable. The array border is not a boundary (a cell cut by it continues outside).

    Examples
    --------
    >>> labels = np.zeros((6, 8), int); labels[1:5, 1:4] = 1; labels[1:5, 4:7] = 2
    >>> cell_boundaries(labels)[2].astype(int)
    array([0, 1, 0, 1, 1, 0, 1, 0])
    """
    labels = _check_labels(labels)
    cross = ndi.generate_binary_structure(labels.ndim, 1)
    high = ndi.grey_dilation(labels, footprint=cross, mode="nearest")
    low = ndi.grey_erosion(labels, footprint=cross, mode="nearest")
    return (labels > 0) & ((high != labels) | (low != labels))


def normalized_distance(labels: np.ndarray, sampling=None) -> np.ndarray:
    """Distance of each cell pixel to its own cell's border, divided by that cell's maximum.

    Parameters
    ----------
    labels : ndarray int, shape (Y, X) or (Z, Y, X)
    sampling : sequence of float, optional
        Pixel size along each axis (e.g. (dz, dy, dx) of an anisotropic volume); default 1 everywhere.

    Returns
    -------
    ndarray float32, same shape: in (0, 1] inside cells (1 at each cell's most interior pixel, small at its edge),
    0 on background. Distances count to the nearest pixel of another label (a touching cell is a border too);
    the array border is not a border.
    """
    labels = _check_labels(labels)
    out = np.zeros(labels.shape, np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, labels.shape))
        inside = labels[grown] == index
        if inside.all():  # the cell fills its whole neighbourhood (e.g. the whole array): no border in sight
            distance = inside.astype(np.float32)
        else:
            distance = ndi.distance_transform_edt(inside, sampling=sampling).astype(np.float32)
        out[grown][inside] = distance[inside] / distance.max()
    return out


def label_conditions(labels: np.ndarray) -> np.ndarray:
    """Condition channels of a label image: foreground, boundary, normalised distance (see ``CONDITION_NAMES``).

    Parameters
    ----------
    labels : ndarray int, shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.

    Returns
    -------
    ndarray float32, shape (3, Y, X) or (3, Z, Y, X), values in [0, 1].

    Examples
    --------
    >>> labels = np.zeros((8, 8), np.int32); labels[2:6, 2:6] = 1
    >>> c = label_conditions(labels)
    >>> c.shape, int(c[0].sum()), int(c[1].sum()), float(c[2].max())
    ((3, 8, 8), 16, 12, 1.0)
    """
    labels = _check_labels(labels)
    return np.stack(
        [(labels > 0).astype(np.float32), cell_boundaries(labels).astype(np.float32), normalized_distance(labels)]
    )


def volume_slice_conditions(labels: np.ndarray, spacing) -> np.ndarray:
    """Condition channels of every z-slice of a label volume, the distance channel measured in 3D.

    Foreground and boundary are those of each slice on its own (:func:`label_conditions`: touching cells stay
    separable in the slice). The distance is the 3D distance to the cell's surface at voxel size `spacing`,
    normalised by the cell's 3D maximum: the middle slice of a round cell gets about the 2D distance map of its
    cross-section, while a slice near the cell's top or bottom gets only small values, as the rim of a cell does in
    2D. (Per-slice 2D distances would call every cap slice a whole small cell with a bright core, which showed up as
    bands at the cells' tops and bottoms in XZ views.)

    Parameters
    ----------
    labels : ndarray int (Z, Y, X)
        Instance labels, 0 = background.
    spacing : (dz, dy, dx)
        Voxel size.

    Returns
    -------
    ndarray float32 (Z, 3, Y, X), values in [0, 1], channels as ``CONDITION_NAMES``.

    Examples
    --------
    >>> labels = np.zeros((9, 9, 9), np.int32); labels[1:8, 1:8, 1:8] = 1
    >>> c = volume_slice_conditions(labels, (1.0, 1.0, 1.0))
    >>> c.shape, float(c[4, 2].max()), float(c[1, 2].max()) < 0.3
    ((9, 3, 9, 9), 1.0, True)
    """
    labels = _check_labels(labels)
    if labels.ndim != 3:
        raise CellcascadeError(f"expected a 3D (Z, Y, X) label volume, found shape {labels.shape}")
    out = np.empty((labels.shape[0], len(CONDITION_NAMES), *labels.shape[1:]), np.float32)
    for z in range(labels.shape[0]):
        out[z, 0] = labels[z] > 0
        out[z, 1] = cell_boundaries(labels[z])
    out[:, 2] = normalized_distance(labels, sampling=tuple(float(s) for s in spacing))
    return out
