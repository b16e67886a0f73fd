"""Pose of one cell: mirror, scale and rotate a binary single-cell shape into a connected footprint."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def pose_matrix_2d(rotation: float, flipped: bool, scale: float) -> np.ndarray:
    """Linear map on (y, x) coordinates: mirror left-right (if `flipped`), scale, then rotate.

    Parameters
    ----------
    rotation : float
        Degrees, counter-clockwise as the image is displayed (row 0 on top), like ``np.rot90`` and
        ``skimage.transform.rotate``.
    flipped : bool
        Mirror along x (``np.fliplr``) before rotating.
    scale : float
        Size factor (> 0).

    Returns
    -------
    ndarray float64, shape (2, 2)
        Maps (y, x) offsets from the shape's centre to offsets in the footprint.
    """
    t = np.deg2rad(rotation)
    rotate = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    mirror = np.diag([1.0, -1.0 if flipped else 1.0])
    return scale * rotate @ mirror


def apply_linear(shape: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Resample a binary shape under a linear map about its centre; any number of dimensions.

    Linear interpolation of the 0/1 image, threshold at 0.5, keep the largest face-connected component, crop to
    its bounding box. A map that shrinks the shape below one pixel keeps the single strongest pixel.

    Parameters
    ----------
    shape : ndarray bool, shape (Y, X) or (Z, Y, X)
        The cell.
    matrix : ndarray float, shape (ndim, ndim)
        Maps offsets from the input centre to offsets from the output centre (axes in array order).

    Returns
    -------
    ndarray bool, ndim dims
        The connected footprint, cropped to its bounding box (no empty border).
    """
    matrix = np.asarray(matrix, dtype=float)
    size_in = np.array(shape.shape, dtype=float)
    half_out = np.abs(matrix) @ (size_in / 2)  # half extent of the mapped box [-0.5, n - 0.5] per axis
    out_shape = tuple(int(n) for n in np.ceil(2 * half_out - 1e-6) + 2)  # 1e-6: cos(90°) is not exactly 0
    centre_in = (size_in - 1) / 2
    centre_out = (np.array(out_shape, dtype=float) - 1) / 2
    inverse = np.linalg.inv(matrix)
    values = ndi.affine_transform(
        shape.astype(np.float32),
        inverse,
        offset=centre_in - inverse @ centre_out,
        output_shape=out_shape,
        order=1,
        mode="grid-constant",
        cval=0.0,
    )
    mask = values > 0.5
    components, count = ndi.label(mask, structure=ndi.generate_binary_structure(mask.ndim, 1))
    if count == 0:
        mask = np.zeros(out_shape, dtype=bool)
        mask[np.unravel_index(np.argmax(values), out_shape)] = True
    elif count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        mask = components == np.argmax(sizes)
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    return mask[box]


def transform_shape(shape: np.ndarray, rotation: float = 0.0, flipped: bool = False, scale: float = 1.0) -> np.ndarray:
    """The footprint of a 2D cell at a given pose (the shape `place_cells` pastes for a cell-table row).

    Parameters
    ----------
    shape : ndarray bool, shape (Y, X)
        One connected cell.
    rotation : float
        Degrees, counter-clockwise as displayed.
    flipped : bool
        Mirrored left-right before the rotation.
    scale : float
        Size factor (> 0); linear, so the area scales by about ``scale**2``.

    Returns
    -------
    ndarray bool, shape (Y', X')
        Connected, cropped to its bounding box.

    Examples
    --------
    >>> import numpy as np
    >>> bar = np.zeros((3, 5), bool); bar[1, :] = True
    >>> transform_shape(bar, rotation=90).shape
    (5, 1)
    """
    return apply_linear(shape, pose_matrix_2d(rotation, flipped, scale))



def rotation_about_z(degrees: float) -> np.ndarray:
    """Rotation (float64, (3, 3)) of physical (z, y, x) offsets by `degrees` in the (y, x) plane.

    The (y, x) block is :func:`pose_matrix_2d`'s rotation (counter-clockwise as displayed); z is unchanged.
    """
    t = np.deg2rad(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (float64, (3, 3), on (z, y, x)): a normalised Gaussian quaternion, 4 draws."""
    quaternion = rng.normal(size=4)
    w, a, b, c = quaternion / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w)],
            [2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w)],
            [2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)],
        ]
    )


def pose_matrix_3d(rotation, flipped: bool, scale: float, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Linear map on (z, y, x) voxel offsets: mirror along x (if `flipped`), scale, then rotate, in physical space.

    With ``S = diag(spacing)`` the map is ``S^-1 (scale R M) S``: the rotation acts on physical offsets, so a cell
    keeps its physical shape in anisotropic voxels.

    Parameters
    ----------
    rotation : float or ndarray float, shape (3, 3)
        Degrees about the z axis (:func:`rotation_about_z`), or a rotation matrix on physical (z, y, x) offsets.
    flipped : bool
        Mirror along x before rotating.
    scale : float
        Size factor (> 0), the same along every axis.
    spacing : (float, float, float)
        Voxel size (dz, dy, dx).

    Returns
    -------
    ndarray float64, shape (3, 3)
    """
    matrix = np.asarray(rotation, dtype=float)
    if matrix.ndim == 0:
        matrix = rotation_about_z(float(matrix))
    mirror = np.diag([1.0, 1.0, -1.0 if flipped else 1.0])
    s = np.asarray(spacing, dtype=float)
    return (scale * matrix @ mirror) * s[None, :] / s[:, None]


def transform_shape_3d(shape: np.ndarray, rotation=0.0, flipped: bool = False, scale: float = 1.0,
                       spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The footprint of a 3D cell at a given pose (the shape `place_cells_3d` pastes for a cell-table row).

    Parameters
    ----------
    shape : ndarray bool, shape (Z, Y, X)
        One connected cell in voxels of size `spacing`.
    rotation : float or ndarray float, shape (3, 3)
        Degrees about z, or a rotation matrix on physical (z, y, x) offsets.
    flipped : bool
        Mirrored along x before the rotation.
    scale : float
        Size factor (> 0).
    spacing : (float, float, float)
        (dz, dy, dx).

    Returns
    -------
    ndarray bool, shape (Z', Y', X')
        Connected, cropped to its bounding box.

    Examples
    --------
    >>> import numpy as np
    >>> bar = np.zeros((1, 1, 5), bool); bar[0, 0, :] = True
    >>> transform_shape_3d(bar, rotation=90).shape
    (1, 5, 1)
    """
    return apply_linear(shape, pose_matrix_3d(rotation, flipped, scale, spacing))
