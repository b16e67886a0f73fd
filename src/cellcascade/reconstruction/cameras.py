"""Orthographic views of one cell and the silhouettes of a voxel mask seen from them.

Conventions used by the whole reconstruction package:

* **Normalised frame.** A cell lives in the cube [-1, 1]^3, centred on the origin. A point ``u`` of that frame is the
  physical position ``centre + half_width * u`` (same ``half_width`` on every axis, so the frame is physically
  isotropic whatever the voxel spacing). Vectors are written in array order ``(z, y, x)``.
* **View.** An orthographic camera given by its elevation (degrees above the xy plane) and azimuth (degrees in the
  xy plane, from +x towards +y). Its direction ``d = (sin el, cos el sin az, cos el cos az)`` in ``(z, y, x)``.
  Opposite directions give mirror images, so a ring of side views only needs azimuths in [0°, 180°).
* **Image axes.** Pixel ``(i, j)`` of an ``S × S`` silhouette sits at ``a * right + b * down`` with
  ``a = (2j + 1) / S - 1`` and ``b = (2i + 1) / S - 1``. The top view (elevation ±90°) has ``right = +x`` and
  ``down = +y``, so it *is* the z-projection of the (Z, Y, X) mask as a 2D annotation shows it (rows = y,
  columns = x). Other views have ``right = (0, cos az, -sin az)`` (horizontal) and ``down`` in the plane of ``d`` and
  -z (rows go down in z for side views).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cellcascade.data.annotated import check_spacing
from cellcascade.errors import CellcascadeError

# The cell's largest radius, as a fraction of the frame's half-width, when the frame is derived from the mask.
DEFAULT_MARGIN = 1.15


@dataclass(frozen=True)
class Views:
    """A set of K orthographic views.

    Attributes
    ----------
    elevation, azimuth : tuple of float, length K
        Degrees. Elevation 90 is the top view (down the z axis, what a 2D annotation shows).

    Examples
    --------
    >>> views = Views(elevation=(90.0, 0.0, 0.0), azimuth=(0.0, 0.0, 90.0))
    >>> views.directions().round(3).tolist()[1]
    [0.0, 0.0, 1.0]
    """

    elevation: tuple[float, ...]
    azimuth: tuple[float, ...]

    def __post_init__(self):
        elevation = tuple(float(e) for e in np.atleast_1d(self.elevation))
        azimuth = tuple(float(a) for a in np.atleast_1d(self.azimuth))
        if len(elevation) == 0 or len(elevation) != len(azimuth):
            raise CellcascadeError(
                f"views need as many elevations as azimuths (got {len(elevation)} and {len(azimuth)}), at least one"
            )
        if not np.all(np.isfinite(elevation + azimuth)) or max(abs(e) for e in elevation) > 90:
            raise CellcascadeError("view angles must be finite and elevations within [-90, 90] degrees")
        object.__setattr__(self, "elevation", elevation)
        object.__setattr__(self, "azimuth", azimuth)

    def __len__(self) -> int:
        return len(self.elevation)

    @property
    def config(self) -> dict:
        """JSON-able description; ``Views(**views.config)`` rebuilds the same views."""
        return {"elevation": list(self.elevation), "azimuth": list(self.azimuth)}

    def directions(self) -> np.ndarray:
        """float64 (K, 3): unit viewing directions in (z, y, x)."""
        return self.basis()[2]

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image axes of every view: ``right``, ``down`` and the direction ``d``, each float64 (K, 3) in (z, y, x)."""
        el = np.deg2rad(np.asarray(self.elevation))
        az = np.deg2rad(np.asarray(self.azimuth))
        zero = np.zeros_like(el)
        d = np.stack([np.sin(el), np.cos(el) * np.sin(az), np.cos(el) * np.cos(az)], axis=1)
        right = np.stack([zero, np.cos(az), -np.sin(az)], axis=1)
        down = -np.array([1.0, 0.0, 0.0]) + np.sin(el)[:, None] * d  # -z with its component along d removed
        top = np.abs(np.cos(el)) < 1e-9
        right[top] = (0.0, 0.0, 1.0)
        down[top] = (0.0, 1.0, 0.0)
        down /= np.linalg.norm(down, axis=1, keepdims=True)
        return right, down, d


def ring_views(n_side: int = 8, elevation: float = 0.0, top: bool = True, full_circle: bool = False) -> Views:
    """The top view (first, if `top`) then a ring of `n_side` views at one elevation.

    Parameters
    ----------
    n_side : int
        Views in the ring, evenly spaced in azimuth starting at 0°.
    elevation : float
        Degrees above the xy plane for the ring (0 = side views).
    top : bool
        Put the top view (elevation 90°, the 2D annotation's view) first.
    full_circle : bool
        Spread the ring over 360° instead of 180° (orthographic views 180° apart are mirror images).

    Returns
    -------
    Views
        ``n_side + top`` views.
    """
    if int(n_side) < 0 or (int(n_side) == 0 and not top):
        raise CellcascadeError(f"a ring needs n_side >= 0 and at least one view (got n_side={n_side}, top={top})")
    span = 360.0 if full_circle else 180.0
    azimuth = [span * k / n_side for k in range(int(n_side))]
    elevations = [float(elevation)] * int(n_side)
    if top:
        azimuth, elevations = [0.0] + azimuth, [90.0] + elevations
    return Views(tuple(elevations), tuple(azimuth))


def mask_frame(volume_mask: np.ndarray, spacing=(1.0, 1.0, 1.0), margin: float = DEFAULT_MARGIN):
    """The frame a mask is seen in: its centroid and a half-width that holds it in every view.

    Parameters
    ----------
    volume_mask : ndarray bool, shape (Z, Y, X)
        One cell.
    spacing : (dz, dy, dx)
        Physical voxel size.
    margin : float
        Half-width over the cell's largest radius (>= 1).

    Returns
    -------
    centre : ndarray float64, shape (3,)
        Centroid in voxel index coordinates (z, y, x).
    half_width : float
        Physical half-width: ``margin`` times the largest distance from the centroid to a voxel's far corner.
    """
    mask = _check_mask(volume_mask)
    spacing = np.asarray(check_spacing(spacing), dtype=np.float64)
    if mask.ndim != 3:
        raise CellcascadeError(f"mask_frame takes one (Z, Y, X) mask, got shape {mask.shape}")
    index = np.argwhere(mask).astype(np.float64)
    centre = index.mean(axis=0)
    radius = np.sqrt((((np.abs(index - centre) + 0.5) * spacing) ** 2).sum(axis=1)).max()
    return centre, float(margin * radius)


def render_silhouettes(
    volume_mask: np.ndarray,
    views: Views,
    spacing=(1.0, 1.0, 1.0),
    size: int = 64,
    half_width: float | None = None,
    centre=None,
    margin: float = DEFAULT_MARGIN,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Orthographic silhouettes of voxel masks, by ray marching through the trilinearly interpolated mask.

    A pixel is 1 where its ray meets the mask's surface (interpolated occupancy > 0.5, i.e. the voxel faces), else 0.
    Rays are sampled every half of the finest voxel size.

    Parameters
    ----------
    volume_mask : ndarray bool, shape (Z, Y, X) or (N, Z, Y, X)
        One cell, or N cells of the same array shape and spacing (rendered as one batch, in one common frame size).
    views : Views
        K views.
    spacing : (dz, dy, dx)
        Physical voxel size; anisotropy is undone here, the silhouettes are in physical units.
    size : int
        Silhouette side S in pixels; one pixel is ``2 * half_width / S`` physical units.
    half_width : float, optional
        Physical half-width of the frame. Default: the largest of :func:`mask_frame` over the cells.
    centre : array (3,) or (N, 3), optional
        Frame centre per cell in voxel index coordinates (z, y, x). Default: each cell's centroid.
    margin : float
        Passed to :func:`mask_frame` when `half_width` is derived.
    device : str or torch.device
        Where to compute.

    Returns
    -------
    ndarray float32, shape (K, S, S) or (N, K, S, S)
        0/1 silhouettes (rows and columns as described in the module docstring).

    Examples
    --------
    >>> zz, yy, xx = np.mgrid[:20, :20, :20]
    >>> ball = (zz - 9.5) ** 2 + (yy - 9.5) ** 2 + (xx - 9.5) ** 2 <= 36
    >>> render_silhouettes(ball, ring_views(4), size=32).shape
    (5, 32, 32)
    """
    masks = _check_mask(volume_mask)
    single = masks.ndim == 3
    if single:
        masks = masks[None]
    if masks.ndim != 4:
        raise CellcascadeError(f"volume_mask must be (Z, Y, X) or (N, Z, Y, X), got shape {volume_mask.shape}")
    if not isinstance(views, Views):
        raise CellcascadeError("views must be a cellcascade.reconstruction.Views")
    spacing = np.asarray(check_spacing(spacing), dtype=np.float64)
    size = int(size)
    if size < 2:
        raise CellcascadeError(f"silhouette size must be at least 2 pixels, got {size}")
    frames = [mask_frame(m, spacing, margin) for m in masks] if (centre is None or half_width is None) else None
    if centre is None:
        centres = np.stack([f[0] for f in frames])
    else:
        centres = np.array(np.broadcast_to(np.asarray(centre, dtype=np.float64), (len(masks), 3)))
    if half_width is None:
        half_width = max(f[1] for f in frames)
    half_width = float(half_width)
    if not half_width > 0:
        raise CellcascadeError(f"half_width must be positive, got {half_width}")

    right, down, d = (torch.as_tensor(v, dtype=torch.float32, device=device) for v in views.basis())
    coords = (2 * torch.arange(size, dtype=torch.float32, device=device) + 1) / size - 1
    plane = coords[None, None, :, None] * right[:, None, None] + coords[None, :, None, None] * down[:, None, None]
    reach = float(np.abs(views.directions()).sum(axis=1).max())  # half-length of the longest chord of the cube
    n_steps = int(np.ceil(2 * reach * half_width / (0.5 * spacing.min()))) + 1
    t = torch.linspace(-reach, reach, n_steps, device=device)
    # (K, S, S, T, 3) points of the normalised frame, in (z, y, x)
    points = plane[:, :, :, None, :] + t[None, None, None, :, None] * d[:, None, None, None, :]
    # voxel index = centre + points * half_width / spacing; grid_sample wants (2 * index + 1) / shape - 1 in (x, y, z)
    shape = np.array(masks.shape[1:], dtype=np.float64)
    scale = torch.as_tensor((2 * half_width / (spacing * shape))[::-1].copy(), dtype=torch.float32, device=device)
    base = (points.flip(-1) * scale).reshape(1, len(views), size * size, n_steps, 3)
    out = np.empty((len(masks), len(views), size, size), np.float32)
    volume = torch.as_tensor(masks, device=device)
    for n in range(len(masks)):
        offset = torch.as_tensor(((2 * centres[n] + 1) / shape - 1)[::-1].copy(), dtype=torch.float32, device=device)
        values = F.grid_sample(volume[n].float()[None, None], base + offset, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        out[n] = (values.amax(dim=-1) > 0.5).reshape(len(views), size, size).cpu().numpy()
    return out[0] if single else out


def _check_mask(volume_mask) -> np.ndarray:
    mask = np.asarray(volume_mask)
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer):
            raise CellcascadeError(f"a cell mask must be bool or integer (0 = outside), got dtype {mask.dtype}")
        mask = mask > 0
    if mask.ndim not in (3, 4):
        raise CellcascadeError(f"a cell mask must be (Z, Y, X) or (N, Z, Y, X), got shape {mask.shape}")
    if not mask.reshape(-1, *mask.shape[-3:]).any(axis=(1, 2, 3)).all():
        raise CellcascadeError("a cell mask is empty: nothing to render")
    return np.ascontiguousarray(mask)  # views with negative strides (np.rot90, flips) cannot become tensors
