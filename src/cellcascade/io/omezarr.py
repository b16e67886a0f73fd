"""OME-Zarr writer: one image with its instance labels as an OME-Zarr label image (``labels/cells``).

Uses the ``ome-zarr`` package (0.18+, OME-NGFF 0.5 on zarr 3): napari (napari-ome-zarr), Fiji (MoBIE/N5) and
``ome_zarr.reader`` open the result with its axes and physical voxel size. The module is named ``omezarr`` (not
``ome_zarr``) so that it never shadows the package it uses.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

LABEL_NAME = "cells"


def write_ome_zarr(path: str | Path, image: np.ndarray, labels: np.ndarray, spacing: tuple[float, ...] | None = None,
                   unit: str = "micrometer", name: str = "image") -> None:
    """Write `image` and its `labels` as one single-resolution OME-Zarr image with a label image.

    Parameters
    ----------
    path : path
        The ``.ome.zarr`` folder to create (replaced if it exists).
    image : ndarray (Y, X) or (Z, Y, X)
        Intensities; the dtype is kept.
    labels : ndarray, same shape as `image`, unsigned integer
        Instance labels (0 = background), written to ``labels/cells`` in their dtype.
    spacing : tuple of float, optional
        Pixel/voxel size along the axes ((y, x) or (z, y, x)), in `unit`; written as the ``scale`` coordinate
        transformation. Without it the scale is 1 and the axes carry no unit.
    unit : str
        An OME-NGFF (UDUNITS-2) length unit, e.g. "micrometer".
    name : str
        Name stored in the image's multiscales metadata.

    Examples
    --------
    >>> write_ome_zarr("img_0000.ome.zarr", image, labels, spacing=(2.0, 0.5, 0.5))  # doctest: +SKIP
    """
    import zarr  # imported here: ome_zarr takes over a second to import

    with warnings.catch_warnings():  # ome_zarr.writer builds a deprecated Scaler as a default argument on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_image, write_labels

    axes = "zyx"[-image.ndim:]
    options = {"axes": axes, "scale_factors": ()}  # () = one resolution level, no pyramid
    if spacing is not None:
        options["scale"] = {axis: float(s) for axis, s in zip(axes, spacing)}
        options["axes_units"] = dict.fromkeys(axes, unit)
    group = zarr.open_group(str(path), mode="w")
    write_image(image, group, name=name, **options)
    # scaler=None: the default (a deprecated Scaler) would override scale_factors with a 4-level pyramid.
    # "source" points a reader from the label image back to its image, as the OME-NGFF spec suggests.
    # write_labels also lists every distinct label id (about 30 µs each) and draws random colours from numpy's global
    # RNG, then drops that list; harmless for hundreds of cells.
    write_labels(labels, group, name=LABEL_NAME, scaler=None, label_metadata={"source": {"image": "../../"}},
                 **options)
