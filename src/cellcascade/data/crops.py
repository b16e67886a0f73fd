"""Single-cell crops: every annotated cell centred in a square crop, with its mask, texture and measurements."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops

from cellcascade.data.annotated import AnnotatedImage, require_ndim
from cellcascade.errors import CellcascadeError

# Largest cell extent, as a fraction of the crop side, when the scale is chosen automatically.
AUTO_SCALE_FILL = 0.75


@dataclass
class CellCrop:
    """One annotated cell, centred (its mask centroid at pixel ((S-1)/2, (S-1)/2)).

    Attributes
    ----------
    mask : ndarray bool, shape (S, S)
        The cell.
    texture : ndarray float32, shape (S, S)
        Intensities; NaN where unknown (other cells, outside the image, and unannotated pixels of sparse data).
    scale : float
        Crop pixels per image pixel (1.0 = not resized).
    source : str
        Name of the image it came from.
    label : int
        Its id in that image.
    touches_border : bool
        Cut by the image border (left out of shape training).
    fits : bool
        Whole cell inside the crop (at this scale).
    measurements : dict
        In image pixels: area, perimeter, bbox (min_row, min_col, max_row, max_col), orientation (rad),
        eccentricity, solidity, mean_intensity, centroid (row, col).
    """

    mask: np.ndarray
    texture: np.ndarray
    scale: float
    source: str
    label: int
    touches_border: bool
    fits: bool
    measurements: dict = field(default_factory=dict)

    @property
    def usable_for_shape(self) -> bool:
        return self.fits and not self.touches_border


def auto_scale(items: list[AnnotatedImage], size: int, fill: float = AUTO_SCALE_FILL) -> float:
    """The one scale factor (≤ 1) that makes the largest cell extent fill `fill` of a `size` crop."""
    require_ndim(items, 2)
    largest = 1
    for item in items:
        for region in regionprops(item.labels):
            r0, c0, r1, c1 = region.bbox
            largest = max(largest, r1 - r0, c1 - c0)
    return min(1.0, fill * size / largest)


def _sample_window(array: np.ndarray, centre: np.ndarray, size: int, scale: float, order: int, cval: float) -> np.ndarray:
    """Resample `array` (Y, X) on a size×size grid with spacing 1/scale, centred on `centre` (row, col)."""
    offsets = (np.arange(size) - (size - 1) / 2) / scale
    rows = centre[0] + offsets[:, None] + 0 * offsets[None, :]
    cols = centre[1] + 0 * offsets[:, None] + offsets[None, :]
    return ndi.map_coordinates(array, [rows, cols], order=order, mode="constant", cval=cval)


def extract_crops(items: list[AnnotatedImage], size: int = 64, scale: float | str = 1.0) -> list[CellCrop]:
    """Cut every annotated cell of 2D images into a centred square crop.

    Parameters
    ----------
    items : list of AnnotatedImage
        2D annotated images (sparse or dense).
    size : int
        Crop side in pixels.
    scale : float or "auto"
        Crop pixels per image pixel; "auto" picks one factor for the whole set so the largest cell fits
        (see :func:`auto_scale`).

    Returns
    -------
    list of CellCrop

    Examples
    --------
    >>> from cellcascade.data import load_sample
    >>> crops = extract_crops(load_sample(), size=64)
    >>> crops[0].mask.shape
    (64, 64)
    """
    require_ndim(items, 2)
    if size < 8:
        raise CellcascadeError(f"crop size must be at least 8 pixels, not {size}")
    if scale == "auto":
        scale = auto_scale(items, size)
    scale = float(scale)
    if not scale > 0:
        raise CellcascadeError(f"scale must be positive, not {scale}")
    crops = []
    for item in items:
        image = item.image.astype(np.float32)
        known_background = item.known_background()
        height, width = item.labels.shape
        for region in regionprops(item.labels, intensity_image=image):
            own = item.labels == region.label
            centre = np.array(region.centroid)
            if scale == 1.0:  # sample on the pixel grid (no interpolation): centroid within half a pixel of the centre
                centre = np.round(centre - (size - 1) / 2) + (size - 1) / 2
            mask = _sample_window(own.astype(np.float32), centre, size, scale, order=1, cval=0) > 0.5
            known = _sample_window((own | known_background).astype(np.float32), centre, size, scale, order=1, cval=0)
            texture = _sample_window(image, centre, size, scale, order=1, cval=0).astype(np.float32)
            texture[known < 0.999] = np.nan
            r0, c0, r1, c1 = region.bbox
            touches_border = r0 == 0 or c0 == 0 or r1 == height or c1 == width
            fits = (max(r1 - r0, c1 - c0) * scale < size - 2) and mask.any() and not (
                mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
            )
            crops.append(
                CellCrop(
                    mask=mask,
                    texture=texture,
                    scale=scale,
                    source=item.name,
                    label=int(region.label),
                    touches_border=bool(touches_border),
                    fits=bool(fits),
                    measurements={
                        "area": float(region.area),
                        "perimeter": float(region.perimeter),
                        "bbox": tuple(int(v) for v in region.bbox),
                        "orientation": float(region.orientation),
                        "eccentricity": float(region.eccentricity),
                        "solidity": float(region.solidity),
                        "mean_intensity": float(region.intensity_mean),
                        "centroid": tuple(float(v) for v in region.centroid),
                    },
                )
            )
    return crops


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the last two axes (k in 0..7): rot90 by k % 4, then a flip if k >= 4."""
    out = np.rot90(array, k % 4, axes=(-2, -1))
    return np.flip(out, axis=-1) if k >= 4 else out
