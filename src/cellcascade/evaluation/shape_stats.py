"""Cell shape statistics, and how far a synthetic set's shapes are from a real set's.

Statistics per cell (scikit-image ``regionprops``, 2D):

- ``area``: pixels.
- ``eccentricity``: of the ellipse with the same second moments; 0 for a disc, towards 1 for elongated cells.
- ``solidity``: area / convex hull area; near 1 for convex cells (0.93–0.99 for digital discs of radius 10–45,
  as regionprops' pixel convex hull is slightly larger than the pixel count).
- ``perimeter2_over_area``: perimeter² / area (``regionprops`` perimeter); 4π ≈ 12.6 for a continuous disc and
  about 13.8 for digital discs (the perimeter estimate runs ~5 % long on circles), larger for irregular or
  elongated cells. Nearly independent of scale. Real and synthetic cells share these biases, so distances are fair.

Inputs are label images: a 2D integer array (Y, X) where every id > 0 is one cell, or a list of them. A binary
mask (bool or 0/1) is a label image with one cell, so a list of single-cell masks works as is (all its pixels
count as that cell, even if they are not connected).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance
from skimage.measure import regionprops

from cellcascade.errors import CellcascadeError

SHAPE_STATISTICS = ("area", "eccentricity", "solidity", "perimeter2_over_area")


def _as_label_images(cells) -> list[np.ndarray]:
    images = [cells] if isinstance(cells, np.ndarray) else list(cells)
    out = []
    for k, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 2:
            raise CellcascadeError(f"shape statistics need 2D masks or label images (Y, X); item {k} has shape {image.shape}")
        if image.dtype == bool:
            image = image.astype(np.uint8)
        if image.dtype.kind not in "iu":
            raise CellcascadeError(f"item {k}: masks must be bool or integer labels, found dtype {image.dtype}")
        if image.size and image.min() < 0:
            raise CellcascadeError(f"item {k}: the label image has negative labels")
        out.append(image)
    return out


def shape_statistics(cells, *, exclude_border: bool = False) -> dict[str, np.ndarray]:
    """Per-cell area, eccentricity, solidity and perimeter²/area.

    Parameters
    ----------
    cells : ndarray (Y, X), or list of them
        Label images (0 = background) or single-cell binary masks.
    exclude_border : bool
        Leave out cells that touch the image border (their shape is cut).

    Returns
    -------
    dict
        Statistic name (see ``SHAPE_STATISTICS``) -> ndarray float64 (n_cells,), one value per cell, in the order
        of the images and, within an image, of the label ids.

    Examples
    --------
    >>> yy, xx = np.indices((41, 41))
    >>> disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2
    >>> stats = shape_statistics([disc])
    >>> round(float(stats["eccentricity"][0]), 3)
    0.0
    """
    values: dict[str, list[float]] = {name: [] for name in SHAPE_STATISTICS}
    for image in _as_label_images(cells):
        height, width = image.shape
        for region in regionprops(image):
            r0, c0, r1, c1 = region.bbox
            if exclude_border and (r0 == 0 or c0 == 0 or r1 == height or c1 == width):
                continue
            values["area"].append(float(region.area))
            values["eccentricity"].append(float(region.eccentricity))
            values["solidity"].append(float(region.solidity))
            values["perimeter2_over_area"].append(float(region.perimeter) ** 2 / float(region.area))
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def summarize(statistics: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, median and count of every statistic (for reports); NaN where there is no cell."""
    summary = {}
    for name, values in statistics.items():
        values = np.asarray(values, dtype=np.float64)
        empty = values.size == 0
        summary[name] = {
            "mean": float("nan") if empty else float(values.mean()),
            "std": float("nan") if empty else float(values.std()),
            "median": float("nan") if empty else float(np.median(values)),
            "n": int(values.size),
        }
    return summary


def _as_statistics(cells, what: str) -> dict[str, np.ndarray]:
    statistics = cells if isinstance(cells, dict) else shape_statistics(cells)
    missing = [name for name in SHAPE_STATISTICS if name not in statistics]
    if missing:
        raise CellcascadeError(f"{what} shape statistics lack {', '.join(missing)}")
    n = len(statistics["area"])
    if n < 2:
        raise CellcascadeError(f"shape distances need at least 2 {what} cells, found {n}")
    return statistics


def shape_distance(real, synthetic) -> dict[str, float]:
    """How far the synthetic cells' shape distributions are from the real cells', statistic by statistic.

    Distance = 1D Wasserstein (earth mover's) distance between the two distributions of a statistic, divided by
    the standard deviation of the real values, so 1 means "off by about one real standard deviation" whatever the
    unit. Identical sets give 0. If every real cell has the same value (std 0), the distance is 0 when the
    synthetic values are all equal to it too, else inf.

    Parameters
    ----------
    real, synthetic : label image (Y, X), list of label images or binary masks, or a dict from
        :func:`shape_statistics`
        At least 2 cells each.

    Returns
    -------
    dict
        Statistic name -> distance (float ≥ 0).

    Examples
    --------
    >>> yy, xx = np.indices((41, 41))
    >>> discs = [(yy - 20) ** 2 + (xx - 20) ** 2 <= r**2 for r in (8, 10, 12)]
    >>> shape_distance(discs, discs)["area"]
    0.0
    """
    real_stats = _as_statistics(real, "real")
    synthetic_stats = _as_statistics(synthetic, "synthetic")
    distances = {}
    for name in SHAPE_STATISTICS:
        r = np.asarray(real_stats[name], dtype=np.float64)
        s = np.asarray(synthetic_stats[name], dtype=np.float64)
        w = float(wasserstein_distance(r, s))
        spread = float(r.std())
        if spread > 0:
            distances[name] = w / spread
        else:
            distances[name] = 0.0 if w == 0 else float("inf")
    return distances
