"""Stage 5 in 3D: texture a (Z, Y, X) label volume slice by slice with the 2D texture model, continuous along z.

Why the slices agree with each other
------------------------------------
The texture model samples with a deterministic sampler (DDIM with eta = 0, or DPM-Solver++; checked by
:func:`check_deterministic_sampler`), so a slice's image is a smooth function of its label slice and of its
initial noise only. Neighbouring slices have nearly the same labels; if they also start from nearly the same noise,
their textures nearly agree, while slices far apart are free to differ. The initial noise of the slices is a
Gaussian process along z whose every slice is standard normal white noise (what the model was trained on):

* ``correlation_length=None`` (default, "isotropic"): each lateral spatial frequency ``k`` (cycles per unit of
  `spacing`) of the noise follows its own AR(1) process along z, ``N_z(k) = rho(k) N_{z-1}(k) + sqrt(1 - rho(k)²)
  E_z(k)`` with ``rho(k) = exp(-2π |k| dz)`` — the z-correlation of that frequency in an isotropic 3D field
  (spectrum ∝ 1/|k|²). Large structures (a cell's overall brightness, big chromatin domains) persist over about as
  many µm in z as they span in Y/X, fine detail changes from slice to slice as fast as it does laterally, so an
  XZ view looks like an XY view (before the axial blur).
* ``correlation_length=L``: one AR(1) coefficient for all frequencies, ``rho = exp(-dz / L)``;
  ``L = 0`` gives independent slices, ``L = inf`` one noise shared by every slice (the paper's shared noise base).

The samplers draw no noise during sampling (DDIM eta = 0, DPM-Solver++), so nothing else needs to be
correlated.

What each slice is conditioned on
---------------------------------
A slice near a cell's top or bottom cuts it in a small cross-section. Its own 2D distance map would call that a
whole small cell, with a bright core (that is how the texture model saw every 2D cell), and the cells' tops and
bottoms showed up as bright bands in XZ views. So by default each slice's distance channel is the cell's 3D
distance to its surface at the voxel spacing, normalised per cell in 3D
(:func:`~cellcascade.models.conditions.volume_slice_conditions`): the middle slice sees about its 2D distance map,
the cap slices see the small values of a cell's rim and are drawn as dim as a rim is. Foreground and boundary
channels stay those of the slice. :func:`finish_volume` then applies what the 2D model cannot know: the part of the axial PSF that
the slices lack (a Gaussian along z, :func:`missing_axial_sigma`; only where an axial PSF is known) and the camera
noise that is still missing, which is independent from voxel to voxel as in a real stack.

Measured on the BBBC050 labels (every 2nd slice, dz = 2 px) with the budget-sample texture model: independent
noise gives an adjacent-slice correlation inside cells of 0.29 and a stripe score of 3.4 (stripes), the paper's
shared noise 0.86 and 0.67 (texture extruded along z), the isotropic default 0.48 and 2.1 — the real BBBC050 volume
at its original z step gives 0.50 and 1.9 (metrics: :mod:`cellcascade.evaluation.continuity`; figures:
``benchmarks/results/texture3d_continuity.md``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from cellcascade.data.annotated import check_spacing
from cellcascade.errors import CellcascadeError
from cellcascade.imaging.model import ImagingModel
from cellcascade.imaging.psf import AXIAL_RATIO, volume_psf_sigmas
from cellcascade.models.conditions import CONDITION_NAMES, volume_slice_conditions
from cellcascade.pipelines.texture import TexturePipeline


def check_label_volume(labels: np.ndarray) -> np.ndarray:
    """Return `labels` as an int array (Z, Y, X); raise CellcascadeError if it is not a 3D integer label volume."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise CellcascadeError(f"labels must be an integer array, found dtype {labels.dtype}")
    if labels.ndim != 3:
        raise CellcascadeError(f"expected a 3D (Z, Y, X) label volume, found shape {labels.shape}")
    if min(labels.shape) < 1:
        raise CellcascadeError(f"the label volume is empty (shape {labels.shape})")
    return labels


def check_deterministic_sampler(scheduler) -> None:
    """Raise CellcascadeError unless `scheduler` adds no noise after the initial one.

    The texture pipeline calls ``scheduler.step`` without ``eta``, so DDIM runs with eta = 0 (deterministic);
    DPM-Solver is deterministic unless its ``algorithm_type`` is an SDE variant. Any other sampler may draw fresh,
    slice-independent noise at every step, which would undo the correlation between slices.
    """
    if isinstance(scheduler, DDIMScheduler):
        return
    if isinstance(scheduler, DPMSolverMultistepScheduler) and "sde" not in str(scheduler.config.algorithm_type):
        return
    raise CellcascadeError(
        f"3D texturing needs a deterministic sampler (DDIM or DPM-Solver++), not {type(scheduler).__name__}"
    )


def slice_correlation(
    shape: tuple[int, int], spacing: tuple[float, float, float], correlation_length: float | None
) -> np.ndarray:
    """Correlation of the initial noise of neighbouring slices, per lateral frequency.

    Parameters
    ----------
    shape : (Y, X)
        Canvas size of one slice.
    spacing : (dz, dy, dx)
    correlation_length : float or None
        None: ``exp(-2π |k| dz)`` per frequency (isotropic); a length L ≥ 0 (units of `spacing`): ``exp(-dz / L)``
        everywhere (0 → 0, inf → 1).

    Returns
    -------
    ndarray float64 (Y, X) in [0, 1], laid out like ``numpy.fft.fft2`` output.

    Examples
    --------
    >>> rho = slice_correlation((4, 4), (1.0, 1.0, 1.0), None)
    >>> float(rho[0, 0]), round(float(rho[0, 1]), 4)  # the mean persists, 1/4 cycle per unit decays
    (1.0, 0.2079)
    >>> float(slice_correlation((4, 4), (2.0, 1.0, 1.0), 2.0)[1, 1]) == float(np.exp(-1))
    True
    """
    dz, dy, dx = check_spacing(spacing)
    if correlation_length is None:
        ky = np.fft.fftfreq(shape[0], d=dy)
        kx = np.fft.fftfreq(shape[1], d=dx)
        k = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
        return np.exp(-2.0 * np.pi * k * dz)
    length = float(correlation_length)
    if math.isnan(length) or length < 0:
        raise CellcascadeError(
            f"correlation length must be ≥ 0 (or None for isotropic noise), not {correlation_length}"
        )
    rho = 0.0 if length == 0 else math.exp(-dz / length)
    return np.full(shape, rho)


def correlated_noise(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    correlation_length: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard normal noise (Z, Y, X), white within each slice and correlated between slices.

    Parameters
    ----------
    shape : (Z, Y, X)
    spacing : (dz, dy, dx)
    correlation_length : float or None
        See :func:`slice_correlation`.
    generator : torch.Generator, optional
        Same state → same noise (drawn on the CPU).

    Returns
    -------
    Tensor float32 (Z, Y, X): every slice standard normal white noise; slice z follows slice z-1 with the
    per-frequency AR(1) coefficient of :func:`slice_correlation`.

    Examples
    --------
    >>> noise = correlated_noise((3, 8, 8), (1, 1, 1), float("inf"), torch.Generator().manual_seed(0))
    >>> bool(torch.equal(noise[0], noise[2]))
    True
    """
    depth, height, width = shape
    rho = slice_correlation((height, width), spacing, correlation_length)
    fresh = torch.randn((depth, height, width), generator=generator, dtype=torch.float64)
    out = torch.empty((depth, height, width), dtype=torch.float32)
    if np.all(rho == rho.flat[0]):  # one coefficient: stay in pixel space (exact, also for rho = 1)
        r = float(rho.flat[0])
        current = fresh[0]
        out[0] = current
        for z in range(1, depth):
            current = r * current + math.sqrt(max(1.0 - r * r, 0.0)) * fresh[z]
            out[z] = current
        return out
    # Per frequency: the filters are real and symmetric in k, so every slice stays real and white.
    r = torch.from_numpy(rho)
    innovation = torch.sqrt(torch.clamp(1.0 - r * r, min=0.0))
    current = torch.fft.fft2(fresh[0])
    out[0] = fresh[0]
    for z in range(1, depth):
        current = r * current + innovation * torch.fft.fft2(fresh[z])
        out[z] = torch.fft.ifft2(current).real
    return out


@torch.no_grad()
def texture_volume(
    pipe: TexturePipeline,
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    num_inference_steps: int = 20,
    generator: torch.Generator | None = None,
    correlation_length: float | None = None,
    progress: bool = False,
    batch_size: int = 16,
    distance: str = "3d",
) -> np.ndarray:
    """Texture a label volume slice by slice with the 2D texture model, with initial noise correlated along z.

    Parameters
    ----------
    pipe : TexturePipeline
        The 2D texture model (its sampler must be deterministic: DDIM or DPM-Solver++).
    labels : ndarray int (Z, Y, X)
        Instance labels, 0 = background. Slices smaller than the model's patch are padded with background (and
        cropped back).
    spacing : (dz, dy, dx)
        Voxel size; dy and dx should be the pixel size of the data the texture model was trained on.
    num_inference_steps : int
    generator : torch.Generator, optional
        Same generator state → same volume.
    correlation_length : float or None
        None: isotropic noise correlation (each lateral frequency persists in z as in an isotropic field). A length
        L ≥ 0 in the units of `spacing`: one AR(1) coefficient ``exp(-dz / L)`` (0 = independent slices,
        ``float("inf")`` = one shared noise). See the module docstring.
    progress : bool
        A progress bar over the slices.
    batch_size : int
        Tiles per UNet call.
    distance : {"3d", "slice"}
        The distance condition of each slice: measured in 3D at `spacing` (default; a slice near a cell's top or
        bottom is conditioned as the rim of a cell, see the module notes), or in the slice alone as in 2D.

    Returns
    -------
    ndarray float32 (Z, Y, X): intensities in the training data's units (background and the model's noise
    included), before :func:`finish_volume`.

    Examples
    --------
    >>> gen = torch.Generator().manual_seed(0)
    >>> volume = texture_volume(pipe, labels, (2.0, 0.5, 0.5), generator=gen)  # doctest: +SKIP
    >>> volume.shape == labels.shape, volume.dtype  # doctest: +SKIP
    (True, dtype('float32'))
    """
    if not isinstance(pipe, TexturePipeline):
        raise CellcascadeError(
            f"3D texturing needs the UNet texture model (TexturePipeline), not {type(pipe).__name__}"
        )
    labels = check_label_volume(labels)
    spacing = check_spacing(spacing)
    if num_inference_steps < 1:
        raise CellcascadeError(f"number of sampling steps must be positive, not {num_inference_steps}")
    check_deterministic_sampler(pipe.scheduler)
    if distance not in ("3d", "slice"):
        raise CellcascadeError(f"distance must be '3d' or 'slice', not {distance!r}")
    depth, height, width = labels.shape
    tile = int(pipe.unet.config.sample_size)
    canvas_h, canvas_w = max(height, tile), max(width, tile)
    noise = correlated_noise((depth, canvas_h, canvas_w), spacing, correlation_length, generator)
    volume = np.empty(labels.shape, np.float32)
    canvas = np.zeros((canvas_h, canvas_w), labels.dtype)
    slice_conditions = volume_slice_conditions(labels, spacing) if distance == "3d" else None
    conditions = None if slice_conditions is None else np.zeros((len(CONDITION_NAMES), canvas_h, canvas_w), np.float32)
    for z in tqdm(range(depth), desc="texture 3D", disable=not progress):
        canvas[:height, :width] = labels[z]
        if conditions is not None:
            conditions[:, :height, :width] = slice_conditions[z]
        image = pipe(canvas, num_inference_steps, generator=generator, batch_size=batch_size,
                     noise=noise[z].numpy(), conditions=conditions).image
        volume[z] = image[:height, :width]
    return volume


def smooth_along_z(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along z only (sigma in slices; 0 = unchanged); float32 (Z, Y, X)."""
    volume = np.asarray(volume, np.float32)
    if volume.ndim != 3:
        raise CellcascadeError(f"expected a 3D (Z, Y, X) volume, found shape {volume.shape}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise CellcascadeError(f"the smoothing sigma must be a finite number ≥ 0, not {sigma}")
    if sigma == 0:
        return volume.copy()
    return ndi.gaussian_filter1d(volume, sigma, axis=0, mode="nearest")


def missing_axial_sigma(
    imaging: ImagingModel, spacing: tuple[float, float, float], axial_ratio: float | None = None
) -> float:
    """Gaussian sigma along z (slices) that a textured volume still lacks to show the imaging model's axial PSF.

    The texture model's slices carry the lateral blur (sigma ``s_xy`` = ``psf_sigma · dy``); with initial noise
    correlated as in an isotropic field their structure along z is about as wide as along Y/X, so about ``s_xy``
    is present along z too. An axial PSF ``s_z`` needs ``sqrt(s_z² - s_xy²) / dz`` slices more (0 when
    ``s_z ≤ s_xy``).

    Parameters
    ----------
    imaging : ImagingModel
        ``psf_sigma_z`` (fitted on 3D data with this z spacing), when set, gives ``s_z``.
    spacing : (dz, dy, dx)
    axial_ratio : float or None
        Without a fitted axial sigma: ``s_z = axial_ratio · s_xy``; None: no axial PSF is known, 0 is returned.

    Examples
    --------
    >>> model = ImagingModel(psf_sigma=1.0)
    >>> round(missing_axial_sigma(model, (2.0, 1.0, 1.0), axial_ratio=3.0), 4)  # sqrt(3² - 1²) / 2
    1.4142
    >>> missing_axial_sigma(model, (2.0, 1.0, 1.0))
    0.0
    """
    dz, dy, _ = check_spacing(spacing)
    if imaging.psf_sigma_z is None and axial_ratio is None:
        return 0.0
    ratio = AXIAL_RATIO if axial_ratio is None else axial_ratio  # unused when psf_sigma_z is set
    sigma_z, _, _ = volume_psf_sigmas(imaging.psf_sigma, imaging.psf_sigma_z, spacing, ratio)
    total, present = sigma_z * dz, imaging.psf_sigma * dy
    return math.sqrt(max(total * total - present * present, 0.0)) / dz


def finish_volume(
    volume: np.ndarray,
    imaging: ImagingModel,
    spacing: tuple[float, float, float],
    rng: np.random.Generator | int | None = None,
    *,
    axial_blur: bool = True,
    axial_ratio: float | None = None,
) -> np.ndarray:
    """Stage 6 on a textured volume: the missing axial blur, then the missing camera noise, rounding and clipping.

    The slices from :func:`texture_volume` carry the lateral blur and part of the noise already (the 2D model
    learned them); what they lack along z is the part of the axial PSF wider than the lateral one. A Gaussian along
    z of :func:`missing_axial_sigma` slices adds it (which also removes part of the model's noise); the noise still
    missing relative to the fitted Poisson-Gaussian model is then added independently per voxel
    (:func:`cellcascade.pipelines.cascade.finish_image`, which works on volumes).

    The axial PSF is the fitted one (``imaging.psf_sigma_z``, from 3D training data) where there is one; otherwise
    `axial_ratio` gives it, and with None no axial blur is added. (3D generation passes
    :data:`cellcascade.imaging.psf.DEFAULT_AXIAL_PSF`, calibrated on generated volumes; see its comment.)

    Parameters
    ----------
    volume : ndarray float (Z, Y, X), data units
    imaging : ImagingModel
    spacing : (dz, dy, dx)
    rng : numpy Generator, int or None
    axial_blur : bool
        False skips the blur (noise, rounding and clipping only).
    axial_ratio : float or None
        Axial / lateral PSF width where the imaging model has no fitted axial sigma (2D data); None = no blur then.

    Returns
    -------
    ndarray (Z, Y, X) of ``imaging.dtype``
    """
    from cellcascade.pipelines.cascade import finish_image

    volume = np.asarray(volume, np.float32)
    if volume.ndim != 3:
        raise CellcascadeError(f"expected a 3D (Z, Y, X) volume, found shape {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise CellcascadeError("the volume holds NaN or infinite values")
    spacing = check_spacing(spacing)
    if axial_blur:
        volume = smooth_along_z(volume, missing_axial_sigma(imaging, spacing, axial_ratio))
    return finish_image(volume, imaging, np.random.default_rng(rng))
