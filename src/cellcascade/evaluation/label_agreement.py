"""Do labels and image agree? Every labelled cell should be a visible cell in the image.

For each label: the mean intensity inside it minus the median of a ring of background pixels around it (pixels
within ``ring`` px of the cell that belong to no label), in units of the image's background noise (a robust std of
the pixels that belong to no label and lie at least ``ring`` px from every cell). A value well above 0 means the
cell stands out from its own surroundings; a label on empty background scores about 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cellcascade.errors import CellcascadeError


def background_noise(image: np.ndarray, labels: np.ndarray, ring: int = 3) -> float:
    """Robust std (1.4826 · MAD) of the pixels at least `ring` px away from every label.

    image : ndarray (Y, X), any real dtype; labels : ndarray int (Y, X), 0 = background.
    """
    far = ~ndi.binary_dilation(labels > 0, iterations=ring)
    values = image[far].astype(np.float64)
    if values.size < 16:
        raise CellcascadeError("too little background around the cells to measure the noise")
    mad = np.median(np.abs(values - np.median(values)))
    return float(max(1.4826 * mad, 1e-6 * (np.abs(values).max() + 1e-12)))


def label_contrast(image: np.ndarray, labels: np.ndarray, ring: int = 3) -> dict[int, float]:
    """Contrast of every label against its local background ring, in background-noise units.

    Parameters
    ----------
    image : ndarray (Y, X), real dtype
    labels : ndarray int (Y, X), 0 = background
    ring : int
        Width in pixels of the background ring around each cell (and the distance that defines "far" background).

    Returns
    -------
    dict label id -> (mean inside − median of the ring) / background noise. Labels whose ring is empty (a cell
    enclosed by others) are compared with the far background's median instead.

    Examples
    --------
    >>> image = np.zeros((32, 32)); labels = np.zeros((32, 32), int); labels[10:20, 10:20] = 1
    >>> image[10:20, 10:20] = 5.0; image += np.random.default_rng(0).normal(0, 1, image.shape)
    >>> label_contrast(image, labels)[1] > 3
    True
    """
    image = np.asarray(image, dtype=np.float64)
    labels = np.asarray(labels)
    if image.shape != labels.shape or image.ndim != 2:
        raise CellcascadeError(f"image and labels must be 2D of one shape, not {image.shape} and {labels.shape}")
    noise = background_noise(image, labels, ring)
    far = ~ndi.binary_dilation(labels > 0, iterations=ring)
    far_median = float(np.median(image[far]))
    out = {}
    for index, window in enumerate(ndi.find_objects(labels), start=1):
        if window is None:
            continue
        grown = tuple(slice(max(0, s.start - ring - 1), s.stop + ring + 1) for s in window)
        cell = labels[grown] == index
        around = ndi.binary_dilation(cell, iterations=ring) & (labels[grown] == 0)
        local = image[grown]
        reference = float(np.median(local[around])) if around.any() else far_median
        out[index] = (float(local[cell].mean()) - reference) / noise
    return out
