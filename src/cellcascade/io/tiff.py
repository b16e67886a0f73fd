"""TIFF writers with ImageJ metadata, so Fiji/ImageJ and napari open them with the right axes and voxel size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def write_tiff(path: str | Path, array: np.ndarray, spacing: tuple[float, ...] | None = None, unit: str = "pixel") -> None:
    """Write a 2D (Y, X) or 3D (Z, Y, X) array as an ImageJ hyperstack TIFF, zlib-compressed.

    Parameters
    ----------
    path : path
    array : ndarray (Y, X) or (Z, Y, X); uint8, uint16, int32 (stored as uint16 when the values fit) or float32
    spacing : tuple, optional
        Pixel/voxel size along the axes ((y, x) or (z, y, x)), in `unit`.

    Examples
    --------
    >>> write_tiff("labels.tif", np.zeros((64, 64), np.uint16))  # doctest: +SKIP
    """
    array = np.asarray(array)
    if array.dtype.kind in "iu" and array.dtype != np.uint8:
        array = array.astype(np.uint16 if array.max(initial=0) <= 65535 and array.min(initial=0) >= 0 else np.int32)
    elif array.dtype.kind == "f":
        array = array.astype(np.float32)
    axes = "ZYX" if array.ndim == 3 else "YX"
    metadata = {"axes": axes, "unit": unit}
    resolution = None
    if spacing is not None:
        resolution = (1.0 / spacing[-1], 1.0 / spacing[-2])
        if array.ndim == 3:
            metadata["spacing"] = spacing[0]
    tifffile.imwrite(path, array, imagej=array.dtype != np.int32, metadata=metadata, resolution=resolution,
                     compression="zlib")
