"""A built-in prior of plausible 3D cell shapes that follow 2D masks: smoothly deformed ellipsoids.

A shape is star-shaped around its centre, with the radius in direction (theta, phi) (theta from +z, phi in the
(y, x) plane from +x towards +y), in physical units:

    r(theta, phi) = exp(f(theta, phi)) / sqrt((sin(theta) / R(phi))**2 + (cos(theta) / c)**2)

- ``R(phi)``, the equator, comes from a 2D mask: its own outline seen from its centroid (``profile="mask"``) or
  its moment ellipse (``profile="ellipse"``), so the shape keeps the mask's area, axes and orientation;
- ``c``, the half height, is ``axial_ratio * sqrt(area / pi)``: z extent / xy equivalent diameter = `axial_ratio`;
- ``f``, a smooth random deformation: real spherical harmonics of degrees 2..`max_degree` with Gaussian
  coefficients, variance falling as ``l**-3``, scaled so that the root mean square of ``f`` over the sphere is
  `deformation` on average (0.1: radii vary by about 10 %).

Without deformation the mid-plane (z = 0) and the z-projection are both exactly the equator (each meridian is a
half ellipse with semi-axes ``R(phi)`` and ``c``), so they match the 2D mask; with it they match on average. The
shapes are voxelised at any anisotropic spacing (dz, dy, dx). Used as training data for the multiview model when no
3D masks exist (issue 5).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.special import sph_harm_y

from cellcascade.errors import CellcascadeError
from cellcascade.shapes3d.measure import check_mask, check_positive, check_spacing, fit_ellipse

N_PHI = 180  # equator samples, and the azimuth resolution of the radius table
N_THETA = 90  # polar resolution of the radius table (2 degrees)
PROFILES = ("mask", "ellipse")


def real_spherical_harmonics(max_degree: int, theta: np.ndarray, phi: np.ndarray, min_degree: int = 2) -> np.ndarray:
    """Orthonormal real spherical harmonics of degrees `min_degree`..`max_degree`.

    Parameters
    ----------
    max_degree, min_degree : int
    theta, phi : ndarray float, same shape S
        Polar angle from +z in [0, pi], azimuth in radians.

    Returns
    -------
    ndarray float64, shape (K, *S)
        ``K = (max_degree + 1)**2 - min_degree**2`` functions, ordered by degree l, then order m = -l..l
        (m < 0: ``sqrt(2) Im Y_l^|m|``, m = 0: ``Y_l^0``, m > 0: ``sqrt(2) Re Y_l^m``); each integrates to 1 in
        square over the sphere.
    """
    out = []
    for degree in range(min_degree, max_degree + 1):
        for order in range(-degree, degree + 1):
            value = sph_harm_y(degree, abs(order), theta, phi)
            if order < 0:
                out.append(math.sqrt(2) * value.imag)
            elif order == 0:
                out.append(value.real)
            else:
                out.append(math.sqrt(2) * value.real)
    return np.array(out, dtype=np.float64).reshape((len(out),) + np.shape(theta))


def coefficient_scales(max_degree: int, deformation: float) -> np.ndarray:
    """Standard deviation of each harmonic coefficient (order of :func:`real_spherical_harmonics`), float64 (K,).

    Variance ``s_l**2`` proportional to ``l**-3``, with ``sum_l (2 l + 1) s_l**2 = 4 pi deformation**2``, so that
    the expected mean of ``f**2`` over the sphere is ``deformation**2``.
    """
    degrees = np.concatenate([np.full(2 * l + 1, l) for l in range(2, max_degree + 1)]).astype(float)
    weights = degrees**-3.0
    if weights.size == 0:
        return weights
    return np.sqrt(weights * 4 * np.pi * deformation**2 / weights.sum())


@dataclass
class CellShape3D:
    """One star-shaped 3D cell in physical units (see the module notes).

    Attributes
    ----------
    equator : ndarray float64, shape (N_PHI,)
        Equatorial radius ``R(phi_j)``, ``phi_j = 2 pi j / N_PHI`` (from +x towards +y).
    half_height : float
        ``c``, the radius along z before the deformation.
    coefficients : ndarray float64, shape (K,)
        Real spherical-harmonic coefficients of the log-radius deformation, degrees 2..`max_degree`.
    max_degree : int
    """

    equator: np.ndarray
    half_height: float
    coefficients: np.ndarray
    max_degree: int

    def radius(self, theta: np.ndarray, phi: np.ndarray, harmonics: np.ndarray | None = None) -> np.ndarray:
        """Radius (float64, physical units) in the directions (`theta`, `phi`), arrays of one shape S.

        `harmonics`, if given, is ``real_spherical_harmonics(self.max_degree, theta, phi)`` (K, *S), precomputed.
        """
        theta, phi = np.asarray(theta, dtype=float), np.asarray(phi, dtype=float)
        position = (phi % (2 * np.pi)) / (2 * np.pi) * N_PHI
        closed = np.append(self.equator, self.equator[0])
        equator = np.interp(position, np.arange(N_PHI + 1), closed)
        base = 1.0 / np.sqrt((np.sin(theta) / equator) ** 2 + (np.cos(theta) / self.half_height) ** 2)
        if self.coefficients.size == 0:
            return base
        if harmonics is None:
            harmonics = real_spherical_harmonics(self.max_degree, theta, phi)
        return base * np.exp(np.tensordot(self.coefficients, harmonics, axes=1))

    def voxelize(self, spacing) -> np.ndarray:
        """The shape as voxels of size `spacing`: a voxel is inside if its centre is.

        Parameters
        ----------
        spacing : (float, float, float)
            (dz, dy, dx), physical units.

        Returns
        -------
        ndarray bool, shape (Z, Y, X)
            Cropped to its bounding box; never empty (the centre voxel is always inside).
        """
        spacing = check_spacing(spacing, 3)
        # Radius table on a (theta, phi) grid with both poles and phi = 2 pi (= 0) included, read by bilinear
        # interpolation: the harmonics are evaluated ~16k times instead of once per voxel.
        theta, phi, harmonics = _table_grid(self.max_degree)
        table = self.radius(*np.meshgrid(theta, phi, indexing="ij"), harmonics=harmonics)
        sin_theta = np.sin(theta)[:, None]
        directions = np.stack([np.cos(theta)[:, None] + 0 * phi, sin_theta * np.sin(phi), sin_theta * np.cos(phi)])
        # Half extents along z, y, x; 5 % more for directions between the nodes.
        reach = (np.abs(directions) * table).reshape(3, -1).max(axis=1) * 1.05
        half = [int(math.ceil(r / s)) + 1 for r, s in zip(reach, spacing)]
        z, y, x = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij", sparse=True)
        rho = np.sqrt(z**2 + y**2 + x**2)
        voxel_theta = np.arccos(np.clip(z / np.where(rho > 0, rho, 1.0), -1.0, 1.0))  # the centre: theta = pi / 2
        voxel_phi = np.arctan2(np.broadcast_to(y, rho.shape), np.broadcast_to(x, rho.shape)) % (2 * np.pi)
        coords = np.stack([voxel_theta / np.pi * N_THETA, voxel_phi / (2 * np.pi) * N_PHI])
        limit = ndi.map_coordinates(table, coords.reshape(2, -1), order=1, mode="nearest").reshape(rho.shape)
        mask = rho <= limit
        box = ndi.find_objects(mask.astype(np.uint8))[0]
        return mask[box]


@functools.lru_cache(maxsize=4)
def _table_grid(max_degree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The radius table's theta (N_THETA + 1,) and phi (N_PHI + 1,) nodes and the harmonics on them (read-only)."""
    theta = np.linspace(0.0, np.pi, N_THETA + 1)
    phi = np.arange(N_PHI + 1) * (2 * np.pi / N_PHI)
    harmonics = real_spherical_harmonics(max_degree, *np.meshgrid(theta, phi, indexing="ij"))
    harmonics.setflags(write=False)
    return theta, phi, harmonics


def equator_from_mask(mask: np.ndarray, pixel_size=(1.0, 1.0), profile: str = "mask") -> np.ndarray:
    """The equatorial radius ``R(phi_j)`` (float64, (N_PHI,), physical units) of a 2D mask (Y, X) bool.

    ``profile="mask"``: the distance from the centroid to where the bilinearly interpolated mask first falls below
    1/2 along each ray (the outline seen from the centroid; for a concave cell, its first exit). If the centroid is
    outside the mask, the pixel farthest from the background is the centre. ``profile="ellipse"``: the moment
    ellipse of :func:`~cellcascade.shapes3d.measure.fit_ellipse`.
    """
    mask = check_mask(mask, 2)
    dy, dx = check_spacing(pixel_size, 2, "pixel_size")
    phi = np.arange(N_PHI) * (2 * np.pi / N_PHI)
    if profile == "ellipse":
        ellipse = fit_ellipse(mask, (dy, dx))
        u = phi - ellipse.angle
        return 1.0 / np.sqrt((np.cos(u) / ellipse.semi_major) ** 2 + (np.sin(u) / ellipse.semi_minor) ** 2)
    if profile != "mask":
        raise CellcascadeError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    values = np.pad(mask.astype(np.float32), 1)  # a zero border: every ray leaves the mask
    yy, xx = np.nonzero(mask)
    centre = np.array([yy.mean(), xx.mean()]) + 1
    if ndi.map_coordinates(values, centre[:, None], order=1)[0] < 0.5:
        distance = ndi.distance_transform_edt(values > 0.5, sampling=(dy, dx))
        centre = np.array(np.unravel_index(np.argmax(distance), values.shape), dtype=float)
    step = 0.1 * min(dy, dx)
    steps = np.arange(1, int(math.ceil(math.hypot(mask.shape[0] * dy, mask.shape[1] * dx) / step)) + 2) * step
    ray_y = centre[0] + np.sin(phi)[:, None] * steps / dy
    ray_x = centre[1] + np.cos(phi)[:, None] * steps / dx
    samples = ndi.map_coordinates(values, np.stack([ray_y, ray_x]).reshape(2, -1), order=1).reshape(ray_y.shape)
    outside = samples < 0.5
    first = np.argmax(outside, axis=1)  # every ray leaves: the last steps lie beyond the padded border
    inner = np.where(first > 0, samples[np.arange(N_PHI), first - 1], 1.0)
    outer = samples[np.arange(N_PHI), first]
    fraction = (inner - 0.5) / np.maximum(inner - outer, 1e-9)
    radius = np.where(first > 0, steps[first - 1], 0.0) + fraction * step
    return np.maximum(radius, 0.5 * min(dy, dx))


def _axial_ratio(axial_ratio, rng: np.random.Generator) -> float:
    """A float ratio as is, or one drawn uniformly from a (min, max) range."""
    if isinstance(axial_ratio, numbers.Real) and not isinstance(axial_ratio, bool):
        return check_positive(axial_ratio, "axial_ratio")
    try:
        low, high = (float(v) for v in axial_ratio)
    except (TypeError, ValueError):
        message = f"axial_ratio must be a positive number or a (min, max) pair, got {axial_ratio!r}"
        raise CellcascadeError(message) from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise CellcascadeError(f"axial_ratio range must satisfy 0 < min <= max, got {axial_ratio!r}")
    return float(rng.uniform(low, high))


def as_generator(rng) -> np.random.Generator:
    """A numpy Generator from a Generator, a non-negative int seed or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0):
        return np.random.default_rng(rng)
    raise CellcascadeError(f"rng must be a numpy Generator, a non-negative int seed or None, got {rng!r}")


def draw_shape(mask_2d: np.ndarray, axial_ratio, rng=None, *, pixel_size=(1.0, 1.0), deformation: float = 0.1,
               max_degree: int = 4, profile: str = "mask") -> CellShape3D:
    """Draw one 3D shape whose equator follows a 2D mask (see the module notes).

    Parameters
    ----------
    mask_2d : ndarray bool, shape (Y, X)
        One cell.
    axial_ratio : float or (float, float)
        z extent / xy equivalent diameter (> 0), or a (min, max) range drawn uniformly.
    rng : numpy.random.Generator or int, optional
    pixel_size : (float, float)
        (dy, dx) of `mask_2d`, physical units.
    deformation : float
        Root mean square of the log-radius deformation (>= 0; 0 = no deformation).
    max_degree : int
        Highest harmonic degree (>= 2); higher = finer bumps.
    profile : {"mask", "ellipse"}
        Equator from the mask's outline or from its moment ellipse.

    Returns
    -------
    CellShape3D
    """
    rng = as_generator(rng)
    mask_2d = check_mask(mask_2d, 2, "mask_2d")
    pixel_size = check_spacing(pixel_size, 2, "pixel_size")
    if not isinstance(deformation, numbers.Real) or isinstance(deformation, bool) or not 0 <= deformation < 1:
        raise CellcascadeError(f"deformation must be a number in [0, 1), got {deformation!r}")
    if not isinstance(max_degree, numbers.Integral) or isinstance(max_degree, bool) or not 2 <= max_degree <= 12:
        raise CellcascadeError(f"max_degree must be an integer from 2 to 12, got {max_degree!r}")
    equator = equator_from_mask(mask_2d, pixel_size, profile)
    ratio = _axial_ratio(axial_ratio, rng)
    area = np.count_nonzero(mask_2d) * pixel_size[0] * pixel_size[1]
    half_height = ratio * math.sqrt(area / math.pi)
    scales = coefficient_scales(int(max_degree), float(deformation))
    coefficients = rng.normal(size=scales.size) * scales if deformation > 0 else np.zeros(0)
    return CellShape3D(equator, half_height, coefficients, int(max_degree))


def sample_shapes(masks_2d, axial_ratio, spacing, rng=None, *, pixel_size=None, deformation: float = 0.1,
                  max_degree: int = 4, profile: str = "mask") -> list[np.ndarray]:
    """Plausible 3D cells, one per 2D mask, voxelised at an anisotropic spacing.

    Each shape keeps its mask's area, axes and orientation in xy (its mid-plane and z-projection match the mask
    on average) and has ``z extent / xy equivalent diameter = axial_ratio`` on average. The same generator state
    (or seed) gives the same shapes.

    Parameters
    ----------
    masks_2d : sequence of ndarray bool, each (Y, X)
        Single-cell masks (e.g. crops of the annotations, or samples of the mask model).
    axial_ratio : float or (float, float)
        z extent / xy equivalent diameter, or a (min, max) range drawn uniformly per cell.
    spacing : (float, float, float)
        Voxel size (dz, dy, dx) of the output, physical units.
    rng : numpy.random.Generator or int, optional
    pixel_size : (float, float), optional
        (dy, dx) of the 2D masks; default the output's (dy, dx).
    deformation, max_degree, profile
        See :func:`draw_shape`.

    Returns
    -------
    list of ndarray bool, each (Z, Y, X)
        Cropped to the cell's bounding box.

    Examples
    --------
    >>> yy, xx = np.mgrid[-12:13, -12:13]
    >>> disc = yy**2 + xx**2 <= 100
    >>> [cell] = sample_shapes([disc], axial_ratio=0.5, spacing=(2.0, 1.0, 1.0), rng=0, deformation=0.0)
    >>> cell.shape  # 21 px wide, 10 units high = 5 slices of 2
    (5, 21, 21)
    """
    spacing = check_spacing(spacing, 3)
    pixel_size = spacing[1:] if pixel_size is None else pixel_size
    rng = as_generator(rng)
    if isinstance(masks_2d, np.ndarray) and masks_2d.ndim == 2:
        raise CellcascadeError("masks_2d must be a sequence of 2D masks; wrap a single mask in a list")
    shapes = []
    for i, mask in enumerate(masks_2d):
        shape = draw_shape(check_mask(mask, 2, f"mask {i}"), axial_ratio, rng, pixel_size=pixel_size,
                           deformation=deformation, max_degree=max_degree, profile=profile)
        shapes.append(shape.voxelize(spacing))
    return shapes
