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


def normalized_distance(labels: np.ndarray) -> np.ndarray:
    """Distance of each cell pixel to its own cell's border, divided by that cell's maximum.

    Parameters
    ----------
    labels : ndarray int, shape (Y, X) or (Z, Y, X)

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
            distance = ndi.distance_transform_edt(inside).astype(np.float32)
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
