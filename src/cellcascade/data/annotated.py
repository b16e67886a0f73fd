"""One annotated image: intensities, instance labels, and what label 0 means."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellcascade.errors import CellcascadeError


@dataclass
class AnnotatedImage:
    """An image with (possibly sparse) instance annotations.

    Attributes
    ----------
    image : ndarray, shape (Y, X) or (Z, Y, X), any real dtype
        Raw intensities, in the file's dtype.
    labels : ndarray, same shape, integer
        Instance labels; 0 = not annotated.
    name : str
        Where it came from (file stem), for tables and manifests.
    dense : bool
        True if every cell is annotated, so label 0 means background. False (the default for user data) means
        label-0 pixels are *unknown*: they may hold unannotated cells.
    """

    image: np.ndarray
    labels: np.ndarray
    name: str
    dense: bool = False

    def __post_init__(self) -> None:
        validate_pair(self.image, self.labels, self.name)

    @property
    def ndim(self) -> int:
        return self.labels.ndim

    def known_background(self) -> np.ndarray:
        """Bool array, True where the annotation says "background" (only possible for dense annotations)."""
        if self.dense:
            return self.labels == 0
        return np.zeros(self.labels.shape, dtype=bool)


def validate_pair(image: np.ndarray, labels: np.ndarray, name: str) -> None:
    """Raise CellcascadeError unless image and labels form a usable annotated pair."""
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
            pass  # float files that hold whole numbers are accepted (converted by the readers)
        else:
            raise CellcascadeError(f"{name}: the mask must hold integer instance labels, found dtype {labels.dtype}")
    if image.shape != labels.shape:
        raise CellcascadeError(f"{name}: image shape {image.shape} and mask shape {labels.shape} differ")
    if labels.ndim not in (2, 3):
        raise CellcascadeError(f"{name}: expected a 2D (Y, X) or 3D (Z, Y, X) image, found shape {labels.shape}")
    if labels.min() < 0:
        raise CellcascadeError(f"{name}: the mask has negative labels")
    if not labels.any():
        raise CellcascadeError(f"{name}: the mask is all zero (no annotated cell)")


def require_ndim(items: list[AnnotatedImage], ndim: int) -> None:
    """Raise CellcascadeError unless every item is `ndim`-dimensional (2 or 3)."""
    for item in items:
        if item.ndim != ndim:
            found = "3D" if item.ndim == 3 else "2D"
            raise CellcascadeError(f"{item.name}: {ndim}D data is required here, found {found} of shape {item.labels.shape}")


def check_spacing(spacing, ndim: int = 3, name: str = "spacing") -> tuple[float, ...]:
    """`spacing` (voxel or pixel size, (dz, dy, dx) or (dy, dx)) as `ndim` positive finite floats.

    Raises CellcascadeError (one line) otherwise.
    """
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise CellcascadeError(f"{name} must be {ndim} positive numbers, got {spacing!r}") from None
    if len(values) != ndim or not all(np.isfinite(s) and s > 0 for s in values):
        axes = "(dz, dy, dx)" if ndim == 3 else "(dy, dx)"
        raise CellcascadeError(f"{name} must be {ndim} positive numbers {axes}, got {spacing!r}")
    return values
