"""Per-cell brightness variation: scale each cell's signal by its own random factor (domain randomisation).

A texture model fitted on a small annotation budget draws cells about as bright as the budget's cells; real images
also hold dimmer cells (out of focus, or weakly stained) that a segmenter must still find. :func:`vary_cell_brightness`
widens the spread: every cell's signal above the background is multiplied by a log-normal factor. The factor map is
spread from each cell to the pixels nearest to it, fading back to 1 over a `halo` of a few pixels (so a cell's blurred
rim follows its cell and the background far from cells, noise included, stays as it was), and smoothed, so that
touching cells of different factors meet without a step. Written by hand: no imaging library offers a per-instance
intensity rescale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cellcascade.errors import CellcascadeError

# Factors are clipped to this range, so no cell vanishes into the background or saturates the dtype.
FACTOR_RANGE = (0.25, 4.0)


def cell_brightness_factors(n_cells: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """``exp(N(0, spread²))`` per cell, clipped to :data:`FACTOR_RANGE`; float64 (n_cells,).

    >>> cell_brightness_factors(3, 0.0, np.random.default_rng(0))
    array([1., 1., 1.])
    """
    if not spread >= 0:
        raise CellcascadeError(f"brightness spread must be at least 0, not {spread}")
    return np.clip(np.exp(rng.normal(0.0, spread, n_cells)), *FACTOR_RANGE) if spread else np.ones(n_cells)


def cell_factor_map(labels: np.ndarray, *, spread: float, rng: np.random.Generator, halo: float = 6.0,
                    smooth: float = 1.0) -> np.ndarray:
    """The factor by which :func:`vary_cell_brightness` scales each pixel's signal; float64 (Y, X).

    Each cell draws one factor (:func:`cell_brightness_factors`, in increasing label order); every pixel takes the
    factor of its nearest cell (the rim outside a mask belongs to that mask's cell), fading to 1 with the distance
    from it. Parameters as in :func:`vary_cell_brightness`.
    """
    labels = np.asarray(labels)
    ids = np.unique(labels[labels > 0])
    factors = cell_brightness_factors(len(ids), spread, rng)
    if not len(ids) or not spread:
        return np.ones(labels.shape)
    lookup = np.ones(int(labels.max()) + 1)
    lookup[ids] = factors
    distance, nearest = ndi.distance_transform_edt(labels == 0, return_indices=True)
    weight = np.exp(-((distance / halo) ** 2)) if halo > 0 else (distance == 0).astype(float)
    factor_map = 1.0 + (lookup[labels[tuple(nearest)]] - 1.0) * weight
    return ndi.gaussian_filter(factor_map, smooth) if smooth > 0 else factor_map


def vary_cell_brightness(image: np.ndarray, labels: np.ndarray, *, spread: float, background: float,
                         rng: np.random.Generator, halo: float = 6.0, smooth: float = 1.0) -> np.ndarray:
    """`image` with each cell's signal above `background` scaled by its own factor (see module docstring).

    Parameters
    ----------
    image : ndarray float (Y, X)
        Intensities in data units (a texture-model output, before or after noise).
    labels : ndarray int (Y, X)
        Instance labels of `image`, 0 = background.
    spread : float
        Standard deviation of the factors' natural logarithm (0 = unchanged; 0.3: 90% of the factors within
        0.61–1.64).
    background : float
        Intensity of the background, which stays as it is.
    rng : numpy Generator
        Draws one factor per label, in increasing label order.
    halo : float
        Distance (pixels) outside a cell over which its factor fades to 1 (Gaussian fall-off with this scale;
        about twice the PSF sigma, so the blurred rim of the cell is scaled with it).
    smooth : float
        Gaussian sigma (pixels) of the factor map (about the PSF's; 0 = sharp steps between touching cells).

    Returns
    -------
    ndarray float32 (Y, X)

    Examples
    --------
    >>> labels = np.zeros((32, 32), int); labels[4:12, 4:12] = 1; labels[20:28, 20:28] = 2
    >>> image = np.where(labels > 0, 110.0, 10.0)
    >>> out = vary_cell_brightness(image, labels, spread=0.5, background=10.0, rng=np.random.default_rng(0))
    >>> bool(np.allclose(out[labels == 0], 10.0))  # the background stays
    True
    >>> cell_brightness_factors(2, 0.5, np.random.default_rng(0)).round(3)  # the draws of that call
    array([1.065, 0.936])
    >>> [round(float((out[8, 8] - 10) / 100), 3), round(float((out[24, 24] - 10) / 100), 3)]  # the cells' centres
    [1.065, 0.936]
    """
    image = np.asarray(image, np.float32)
    if image.shape != np.shape(labels) or image.ndim != 2:
        raise CellcascadeError(f"image and labels must be 2D of the same shape, got {image.shape} and {np.shape(labels)}")
    factor_map = cell_factor_map(labels, spread=spread, rng=rng, halo=halo, smooth=smooth)
    return (background + (image - background) * factor_map).astype(np.float32)
