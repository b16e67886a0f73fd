"""A microscope's field of view: cut a scene that was made larger than the image down to the image.

Population synthesis keeps every cell wholly inside its canvas, but a real image is a window onto a larger
specimen: the cells along its border are cut (a sixth of the annotated nuclei in the right half of the embedded
sample touch the border). A segmenter that never sees a cut cell against the image edge learns that cells end
before the border. So the cascade can build a scene `margin` pixels larger on every side, texture it whole (the
texture model then sees whole cells, and the border cuts through real texture), and keep only the window.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cellcascade.errors import CellcascadeError

# Pieces of cut cells smaller than this many pixels are dropped (set to background): Cellpose's own ``min_size``
# (15 px) drops predicted objects that small, so a label there could never be matched.
MIN_FRAGMENT = 15


def crop_field_of_view(labels: np.ndarray, cells: list[dict], margin: int,
                       min_fragment: int = MIN_FRAGMENT) -> tuple[np.ndarray, list[dict]]:
    """Cut `margin` pixels from every side of a 2D scene; cells crossing the new border keep their visible part.

    Parameters
    ----------
    labels : ndarray, integer, shape (Y + 2 * margin, X + 2 * margin)
        The scene's instance labels, 0 = background, ids 1..n as in `cells`.
    cells : list of dict
        The scene's per-cell table (:class:`cellcascade.population.Population`), one dict with an ``id`` per cell.
    margin : int
        Pixels removed from each side, >= 0 and less than half of each axis.
    min_fragment : int
        A cut cell whose visible part has fewer pixels is dropped.

    Returns
    -------
    labels : ndarray uint16, shape (Y, X)
        Ids 1..m consecutive, in the order of the scene's ids.
    cells : list of dict
        The visible cells' rows, renumbered, with ``centroid`` (y, x) of the visible pixels, ``cut`` (True where
        the border removed part of the cell) and ``visible_fraction`` (visible / whole area).

    Examples
    --------
    >>> scene = np.zeros((10, 10), np.uint16)
    >>> scene[4:6, 0:4] = 1  # crosses the left border of the window [2:8, 2:8]
    >>> scene[4:6, 5:7] = 2  # wholly inside
    >>> window, table = crop_field_of_view(scene, [{"id": 1}, {"id": 2}], 2, min_fragment=1)
    >>> window.shape, [c["cut"] for c in table], table[0]["visible_fraction"]
    ((6, 6), [True, False], 0.5)
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise CellcascadeError(f"labels must be a 2D integer array, not {labels.ndim}D {labels.dtype}")
    if not isinstance(margin, (int, np.integer)) or margin < 0 or 2 * margin >= min(labels.shape):
        raise CellcascadeError(f"margin must be an integer in [0, {(min(labels.shape) - 1) // 2}], not {margin!r}")
    if min_fragment < 1:
        raise CellcascadeError(f"min_fragment must be at least 1 pixel, not {min_fragment}")
    rows = {int(c["id"]): c for c in cells}
    whole = np.bincount(labels.ravel().astype(np.int64))
    window = labels[margin : labels.shape[0] - margin, margin : labels.shape[1] - margin]
    visible = np.bincount(window.ravel().astype(np.int64), minlength=len(whole))
    kept = [i for i in range(1, len(whole)) if visible[i] >= (min_fragment if visible[i] < whole[i] else 1)]
    lookup = np.zeros(len(whole), np.uint16)
    lookup[kept] = np.arange(1, len(kept) + 1)
    out = lookup[window]
    centroids = ndi.center_of_mass(np.ones(out.shape), out, range(1, len(kept) + 1)) if kept else []
    table = []
    for new_id, (old_id, centroid) in enumerate(zip(kept, centroids), start=1):
        row = dict(rows.get(old_id, {}))
        row.update(id=new_id, centroid=[float(centroid[0]), float(centroid[1])], cut=bool(visible[old_id] < whole[old_id]),
                   visible_fraction=float(visible[old_id] / whole[old_id]))
        table.append(row)
    return out, table
