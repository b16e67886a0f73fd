"""Writers for generated datasets of (image, labels) pairs, in three layouts chosen by name.

- ``"tiff"``: Cellpose pairs in one folder, ``img_0000.tif`` + ``img_0000_masks.tif`` (read back by
  :func:`cellcascade.data.read_pairs`).
- ``"ctc"``: the Cell Tracking Challenge layout, ``01/t000.tif`` + ``01_GT/SEG/man_seg000.tif`` (3-digit frame
  numbers, more when there are more than 1000 frames; read back by :func:`cellcascade.data.read_ctc`).
- ``"ome-zarr"``: one ``img_0000.ome.zarr`` per sample, labels in ``img_0000.ome.zarr/labels/cells``.

TIFFs are ImageJ hyperstacks with axes YX or ZYX and the voxel size (see :func:`cellcascade.io.tiff.write_tiff`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cellcascade.errors import CellcascadeError
from cellcascade.io.omezarr import write_ome_zarr
from cellcascade.io.tiff import write_tiff

FORMATS = ("tiff", "ctc", "ome-zarr")

# OME-NGFF unit name -> the name ImageJ shows as that unit
UNITS = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm"}

IMAGE_DTYPES = (np.uint8, np.uint16, np.float32)
CTC_SEQUENCE = "01"
MAX_LABEL = np.iinfo(np.int32).max  # TIFF label files above 65535 are int32, and the readers return int32


def _digits(minimum: int, count: int | None) -> int:
    return minimum if count is None else max(minimum, len(str(count - 1)))


class DatasetWriter:
    """Write (image, labels) samples into `folder` in one of :data:`FORMATS`.

    Parameters
    ----------
    folder : path
        Output folder (created if missing), typically the temporary folder of
        :func:`cellcascade.io.output.output_folder`.
    format : {"tiff", "ctc", "ome-zarr"}
    spacing : tuple of float, optional
        Pixel size (y, x) for 2D samples or voxel size (z, y, x) for 3D samples, in `unit`; stored in the ImageJ
        metadata of TIFFs and as the OME-Zarr scale. All samples then must have that many axes.
    unit : {"micrometer", "nanometer", "millimeter"}
        Unit of `spacing`.
    count : int, optional
        Number of samples the dataset will hold. Sets the width of the numbers in file names (at least 4 digits for
        ``img_0000``, 3 for CTC's ``t000``); without it, indices must stay below 10000 (1000 for "ctc").

    Examples
    --------
    >>> writer = DatasetWriter(out, "ctc", spacing=(2.0, 0.5, 0.5), count=10)  # doctest: +SKIP
    >>> writer.add(0, image, labels)  # doctest: +SKIP
    {'image': '01/t000.tif', 'labels': '01_GT/SEG/man_seg000.tif'}
    """

    def __init__(self, folder: str | Path, format: str = "tiff", spacing: tuple[float, ...] | None = None,
                 unit: str = "micrometer", count: int | None = None) -> None:
        if format not in FORMATS:
            raise CellcascadeError(f"unknown output format {format!r}; choose one of {', '.join(FORMATS)}")
        if unit not in UNITS:
            raise CellcascadeError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
        if spacing is not None:
            spacing = tuple(float(s) for s in spacing)
            if len(spacing) not in (2, 3) or not all(math.isfinite(s) and s > 0 for s in spacing):
                raise CellcascadeError(f"spacing must be 2 or 3 positive numbers ((y, x) or (z, y, x)), not {spacing}")
        if count is not None and count < 1:
            raise CellcascadeError(f"count must be at least 1, not {count}")
        self.folder = Path(folder)
        self.format = format
        self.spacing = spacing
        self.unit = unit
        self.count = count
        self.width = _digits(3 if format == "ctc" else 4, count)

    def files(self, index: int) -> dict[str, str]:
        """Paths of sample `index`, relative to the folder: ``{"image": ..., "labels": ...}`` (POSIX style)."""
        if not isinstance(index, (int, np.integer)) or index < 0 or index >= 10**self.width:
            raise CellcascadeError(f"sample index {index!r} must be an integer from 0 to {10**self.width - 1}"
                                   " (pass count= to the writer for larger datasets)")
        if self.count is not None and index >= self.count:
            raise CellcascadeError(f"sample index {index} is out of range for a dataset of {self.count}")
        number = f"{int(index):0{self.width}d}"
        if self.format == "tiff":
            return {"image": f"img_{number}.tif", "labels": f"img_{number}_masks.tif"}
        if self.format == "ctc":
            return {"image": f"{CTC_SEQUENCE}/t{number}.tif", "labels": f"{CTC_SEQUENCE}_GT/SEG/man_seg{number}.tif"}
        return {"image": f"img_{number}.ome.zarr", "labels": f"img_{number}.ome.zarr/labels/cells"}

    def add(self, index: int, image: np.ndarray, labels: np.ndarray) -> dict[str, str]:
        """Write sample `index` and return its relative paths (as :meth:`files`).

        Parameters
        ----------
        index : int
            Sample number, from 0.
        image : ndarray (Y, X) or (Z, Y, X); uint8, uint16 or float32 (float64 is stored as float32)
            Intensities; the dtype is kept.
        labels : ndarray, same shape, integer >= 0
            Instance labels, 0 = background; stored as uint16, or uint32 where an id exceeds 65535 (the TIFF formats
            then hold int32, which ImageJ hyperstacks cannot store: those files are plain TIFFs).
        """
        files = self.files(index)
        image, labels = self._check(index, np.asarray(image), np.asarray(labels))
        image_path, labels_path = self.folder / files["image"], self.folder / files["labels"]
        if self.format == "ome-zarr":
            self.folder.mkdir(parents=True, exist_ok=True)
            name = image_path.name.removesuffix(".ome.zarr")
            write_ome_zarr(image_path, image, labels, self.spacing, self.unit, name=name)
            return files
        image_path.parent.mkdir(parents=True, exist_ok=True)
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        unit = UNITS[self.unit] if self.spacing is not None else "pixel"
        write_tiff(image_path, image, self.spacing, unit)
        write_tiff(labels_path, labels, self.spacing, unit)
        return files

    def _check(self, index: int, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate one sample; return the image in its stored dtype and the labels as uint16/uint32."""
        name = f"sample {index}"
        if image.shape != labels.shape:
            raise CellcascadeError(f"{name}: image shape {image.shape} and labels shape {labels.shape} differ")
        if image.ndim not in (2, 3):
            raise CellcascadeError(f"{name}: expected a 2D (Y, X) or 3D (Z, Y, X) array, found shape {image.shape}")
        if self.spacing is not None and len(self.spacing) != image.ndim:
            raise CellcascadeError(f"{name}: {image.ndim}D sample but the spacing {self.spacing} has "
                                   f"{len(self.spacing)} values")
        if image.dtype == np.float64:
            image = image.astype(np.float32)
        if image.dtype not in IMAGE_DTYPES:
            raise CellcascadeError(f"{name}: image dtype {image.dtype} not supported (use uint8, uint16 or float32)")
        if labels.dtype.kind not in "iu":
            raise CellcascadeError(f"{name}: labels must be integers, found dtype {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise CellcascadeError(f"{name}: labels must not be negative")
        largest = int(labels.max(initial=0))
        if largest > MAX_LABEL:
            raise CellcascadeError(f"{name}: label id {largest} too large (at most {MAX_LABEL})")
        return image, labels.astype(np.uint16 if largest <= np.iinfo(np.uint16).max else np.uint32)


def write_sample(folder: str | Path, format: str, index: int, image: np.ndarray, labels: np.ndarray,
                 spacing: tuple[float, ...] | None = None, unit: str = "micrometer",
                 count: int | None = None) -> dict[str, str]:
    """Write one sample and return its relative paths.

    Shorthand for ``DatasetWriter(folder, format, spacing, unit, count).add(index, image, labels)``.
    """
    return DatasetWriter(folder, format, spacing, unit, count).add(index, image, labels)
