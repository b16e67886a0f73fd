"""Optical blur: a Gaussian PSF whose width is fitted to the intensity edges of annotated cells.

Why edges of annotated cells: the generator draws sharp masks and blurs them, so the quantity it needs is exactly
"how wide is the real intensity transition across a drawn cell boundary". Around each annotated cell we model the
image as ``alpha + beta * (mask * G_sigma)`` (local background ``alpha``, cell contrast ``beta``, both fitted per
cell by least squares) and choose the one ``sigma`` that explains all cells best (smallest mean normalised residual).
This uses only pixels the annotation vouches for (the cell and a thin band around it, other cells excluded), works
for sparse annotations, and is insensitive to texture far from the edge. A power-spectrum estimate, by contrast,
mixes blur with cell size, texture and noise. The result is an *effective* PSF (it also absorbs annotation habits
and rounded nuclear edges), which is what a mask-to-image simulator has to reproduce.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import minimize_scalar

from cellcascade.data.annotated import AnnotatedImage
from cellcascade.errors import CellcascadeError

# Sane range for a fitted PSF sigma, in pixels.
PSF_SIGMA_RANGE = (0.3, 8.0)
# Width (pixels) of the band outside each cell that takes part in the edge fit.
EDGE_BAND = 8
# At most this many cells enter the fit (a fixed-seed random subset), to keep fitting fast on large data.
MAX_CELLS = 300
# Axial / lateral width of the PSF when no axial width was fitted (2D training data). Diffraction theory gives about
# 3-4.5 for widefield and confocal objectives of NA 0.8-1.4; 3 is a moderate choice.
AXIAL_RATIO = 3.0
# The axial / lateral PSF width that 3D generation (`generate --dim 3`) assumes when the imaging model has no
# fitted axial width. Calibrated on generated volumes rather than taken from optics: slice-wise texture with
# z-correlated noise still changes a little from slice to slice, and a small extra blur along z removes that.
# Measured on the README's 3D volume (32x256x256, 41 cells; benchmarks/results/generate3d*.md): stripe score /
# adjacent-slice correlation inside cells 2.40 / 0.75 at 1.05 (0.45 slices of blur at z step 2, PSF sigma 2.8 px),
# 1.69 / 0.82 at 1.1, against 1.93 / 0.50 (p10-p90 over slice pairs -0.02-0.81) for the real BBBC050 volume at
# its z step: 1.05 keeps the correlation inside the real range, 1.1 is already smoother along z than the real
# volume. Without blur a smaller volume scored 3.28 / 0.61 (stripes visible in XZ). 1 adds no blur.
DEFAULT_AXIAL_PSF = 1.05


def _cell_windows(items: list[AnnotatedImage], max_cells: int = MAX_CELLS) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """For each usable cell: (own mask float64 window, bool of pixels in the fit, their centred intensities,
    the intensities' sum of squares). Windows are N-d.

    A cell is usable if it does not touch the image border (a cut cell has a false edge there). Its window is the
    bounding box padded by the band, cut at the image border. The window need not hold the blur's full reach: the
    mask is 0 outside it, so a zero-padded blur of the window is exact.
    """
    pad = EDGE_BAND + 1
    windows = []
    for item in items:
        labels = item.labels
        for label, box in enumerate(ndi.find_objects(labels), start=1):
            if box is None or any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape)):
                continue
            window = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(box, labels.shape))
            lab = labels[window]
            own = lab == label
            outside_distance = ndi.distance_transform_edt(~own)
            used = own | ((outside_distance <= EDGE_BAND) & (lab == 0))
            values = item.image[window][used].astype(np.float64)
            values -= values.mean()
            ss_values = _dot(values, values)
            if ss_values > 0:
                windows.append((own.astype(np.float64), used, values, ss_values))
    if len(windows) > max_cells:
        keep = np.random.default_rng(0).choice(len(windows), max_cells, replace=False)
        windows = [windows[i] for i in sorted(keep)]
    return windows


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Dot product without BLAS (whose thread start-up costs milliseconds per call on a busy machine)."""
    return float(np.einsum("i,i->", a, b))


def _edge_misfit(windows, sigma) -> float:
    """Mean over cells of the normalised residual of ``image ≈ alpha + beta * blur(mask, sigma)`` (1 - R²)."""
    total = 0.0
    for own, used, values, ss_values in windows:
        model = ndi.gaussian_filter(own, sigma, mode="constant")[used]
        model -= model.mean()
        ss_model = _dot(model, model)
        if ss_model <= 0:
            continue
        explained = _dot(values, model) ** 2 / ss_model
        total += 1.0 - explained / ss_values
    return total / max(len(windows), 1)


def fit_psf_sigma(items: list[AnnotatedImage]) -> tuple[float, float | None]:
    """Fit the Gaussian PSF sigma (pixels) to the edges of annotated cells.

    Parameters
    ----------
    items : list of AnnotatedImage
        2D (Y, X) or 3D (Z, Y, X) annotated images (sparse or dense).

    Returns
    -------
    sigma : float
        Lateral sigma (Y and X), clamped to ``PSF_SIGMA_RANGE``.
    sigma_z : float or None
        Axial sigma for 3D data (fitted with the lateral one fixed), None for 2D data.

    Examples
    --------
    >>> from cellcascade.data import load_sample
    >>> sigma, sigma_z = fit_psf_sigma(load_sample())
    >>> 0.3 <= sigma <= 8.0 and sigma_z is None
    True
    """
    windows = _cell_windows(items)
    if not windows:
        raise CellcascadeError("cannot fit the blur: every annotated cell touches the image border")
    ndim = windows[0][0].ndim
    low, high = PSF_SIGMA_RANGE

    def fit_1d(make_sigma) -> float:
        grid = np.arange(0.5, high + 1e-9, 0.5)
        scores = [_edge_misfit(windows, make_sigma(s)) for s in grid]
        best = int(np.argmin(scores))
        lo = grid[best - 1] if best > 0 else low
        hi = grid[min(best + 1, len(grid) - 1)]
        if hi <= lo:
            return float(grid[best])
        result = minimize_scalar(lambda s: _edge_misfit(windows, make_sigma(s)), bounds=(lo, hi), method="bounded",
                                 options={"xatol": 0.01})
        return float(result.x)

    sigma = fit_1d(lambda s: (s,) * ndim)
    if ndim == 2:
        return float(np.clip(sigma, low, high)), None
    sigma_z = fit_1d(lambda s: (s,) + (sigma,) * (ndim - 1))
    sigma = fit_1d(lambda s: (sigma_z,) + (s,) * (ndim - 1))
    return float(np.clip(sigma, low, high)), float(np.clip(sigma_z, low, high))


def volume_psf_sigmas(
    psf_sigma: float,
    psf_sigma_z: float | None,
    spacing: tuple[float, float, float],
    axial_ratio: float = AXIAL_RATIO,
) -> tuple[float, float, float]:
    """Gaussian PSF sigmas in voxels (z, y, x) for a volume with voxel size `spacing`.

    Parameters
    ----------
    psf_sigma : float
        Lateral sigma in pixels (the lateral pixel size of the fitted data is taken to be dy = dx of the volume).
    psf_sigma_z : float or None
        Axial sigma in z-slices, fitted on 3D data with this volume's z spacing: used as it is. None (2D data):
        the axial width is `axial_ratio` times the lateral width in physical units, i.e.
        ``axial_ratio * psf_sigma * dy / dz`` slices.
    spacing : (dz, dy, dx)
        Voxel size (any one unit).
    axial_ratio : float
        Axial / lateral PSF width, used only when `psf_sigma_z` is None.

    Returns
    -------
    (sigma_z, sigma_y, sigma_x) in voxels.

    Examples
    --------
    >>> volume_psf_sigmas(1.0, None, (2.0, 0.5, 0.5))
    (0.75, 1.0, 1.0)
    """
    try:
        dz, dy, dx = (float(s) for s in spacing)
    except (TypeError, ValueError):
        raise CellcascadeError(f"spacing must be three numbers (dz, dy, dx), not {spacing!r}") from None
    if not all(np.isfinite(v) and v > 0 for v in (dz, dy, dx)):
        raise CellcascadeError(f"spacing must be three positive numbers (dz, dy, dx), not {spacing!r}")
    if not (np.isfinite(axial_ratio) and axial_ratio > 0):
        raise CellcascadeError(f"the axial PSF ratio must be a positive number, not {axial_ratio}")
    sigma_x = float(psf_sigma) * dy / dx  # psf_sigma is in units of dy
    sigma_z = float(psf_sigma_z) if psf_sigma_z is not None else float(axial_ratio) * float(psf_sigma) * dy / dz
    return sigma_z, float(psf_sigma), sigma_x
