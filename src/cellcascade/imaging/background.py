"""Background: which pixels are background, its level, and its slow (low-frequency) variation.

Rule for "known background" pixels (``background_mask``):

- dense annotation: label 0 and farther than ``margin`` pixels from every annotated cell;
- sparse annotation (label 0 is unknown): label 0, *and* below an Otsu threshold of the lightly smoothed label-0
  intensities (which separates background from unannotated cells), *and* farther than ``margin`` pixels from every
  annotated cell and every above-threshold pixel (so blurred cell edges do not count as background).

``margin = 2 + 3 * psf_sigma`` pixels. If fewer than ``MIN_BACKGROUND_FRACTION`` of the pixels qualify, the darkest
10 % of the label-0 pixels are used instead.

The background is modelled as ``level + std * F`` where ``F`` is Gaussian-smoothed white noise (smoothing
``scale`` pixels) scaled to unit standard deviation. ``scale`` is fixed to 1/16 of the smaller image side
(low-frequency by construction); ``std`` is the spatial standard deviation of the real background smoothed at
that scale, times sqrt(2): a field of scale ``s`` smoothed again at ``s`` keeps half of its variance (in 2D), and
this factor makes the fit return the ``std`` that generated such a field.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import brentq
from scipy.stats import norm, poisson
from skimage.filters import threshold_otsu

from cellcascade.data.annotated import AnnotatedImage

MIN_BACKGROUND_FRACTION = 0.01
# Smoothing (pixels) before the Otsu threshold of sparse data.
THRESHOLD_SMOOTHING = 2.0
# Above this Poisson mean (level / gain) the photon counts are summed as a normal distribution: exact sums would need
# ever longer arrays (a near-zero fitted gain, e.g. on a resized image, gave 10^9 terms) for no change in the result.
MAX_EXACT_POISSON_MEAN = 1e4


def foreground_threshold(item: AnnotatedImage) -> float:
    """Otsu threshold of the smoothed label-0 intensities: above it a pixel is likely part of a cell."""
    smooth = ndi.gaussian_filter(item.image.astype(np.float32), THRESHOLD_SMOOTHING)
    values = smooth[item.labels == 0]
    if values.size == 0 or values.min() == values.max():
        return float(np.inf)
    return float(threshold_otsu(values))


def foreground_mask(item: AnnotatedImage) -> np.ndarray:
    """Bool array, same shape as the image: annotated cells, plus (sparse data) pixels above the Otsu threshold."""
    cells = item.labels > 0
    if item.dense:
        return cells
    smooth = ndi.gaussian_filter(item.image.astype(np.float32), THRESHOLD_SMOOTHING)
    return cells | (smooth > foreground_threshold(item))


def background_mask(item: AnnotatedImage, psf_sigma: float = 1.0) -> np.ndarray:
    """Bool array, same shape as the image: pixels that the data shows to be background (see module docstring).

    Examples
    --------
    >>> from cellcascade.data import load_sample
    >>> item = load_sample()[0]
    >>> mask = background_mask(item, psf_sigma=1.0)
    >>> bool(mask.any() and not (mask & (item.labels > 0)).any())
    True
    """
    margin = 2.0 + 3.0 * psf_sigma
    occupied = foreground_mask(item)
    mask = ndi.distance_transform_edt(~occupied) > margin
    if mask.mean() < MIN_BACKGROUND_FRACTION:
        unlabelled = item.labels == 0
        smooth = ndi.gaussian_filter(item.image.astype(np.float32), THRESHOLD_SMOOTHING)
        if unlabelled.any():
            mask = unlabelled & (smooth <= np.percentile(smooth[unlabelled], 10))
    return mask


def clipped_mean(level: float, gain: float, offset: float, floor: float) -> float:
    """Mean of ``max(add_noise(level), floor)``: the mean a clipped camera reports for a true background ``level``.

    ``add_noise`` draws ``gain * Poisson(level / gain) + Normal(0, offset)`` (for ``level ≤ 0`` just
    ``level + Normal(0, offset)``); clipping at ``floor`` adds ``E[(floor - Y)+]`` to the mean. Poisson means above
    ``MAX_EXACT_POISSON_MEAN`` use the normal approximation of the photon counts.
    """
    sd = float(np.sqrt(offset))
    if gain > 0 and 0 < level <= gain * MAX_EXACT_POISSON_MEAN:
        lam = level / gain
        counts = np.arange(0, int(poisson.ppf(1 - 1e-9, lam)) + 2)
        weights, centres = poisson.pmf(counts, lam), gain * counts
    else:
        weights, centres = np.ones(1), np.array([level])
        if gain > 0 and level > 0:  # many photons: gain * Poisson(level / gain) is Normal(level, gain * level)
            sd = float(np.sqrt(offset + gain * level))
    if sd > 0:
        z = (floor - centres) / sd
        shortfall = (floor - centres) * norm.cdf(z) + sd * norm.pdf(z)
    else:
        shortfall = np.maximum(floor - centres, 0.0)
    return float(level + np.sum(weights * shortfall))


def background_level(values: np.ndarray, floor: float | None, gain: float, offset: float) -> float:
    """Background level from the values of known-background pixels.

    The mean of the values up to their 99th percentile (the top 1 % dropped against bright pixels of unannotated
    cells; unlike a median, not stuck on integers or biased by the skew of low-count Poisson noise). If the images
    are clipped at a ``floor`` (e.g. 0), that mean is too high; the level is then the one whose clipped mean under
    the fitted noise model (``gain``, ``offset``; see :func:`clipped_mean`) equals it.
    """
    values = np.asarray(values, dtype=np.float64)
    mean = float(values[values <= np.percentile(values, 99)].mean())
    if floor is None:
        return mean
    sd = np.sqrt(gain * max(mean, 0.0) + offset) + 1.0
    low, high = floor - 10 * sd, mean
    if not clipped_mean(low, gain, offset, floor) < mean:
        return mean
    if clipped_mean(high, gain, offset, floor) <= mean:
        return mean
    return float(brentq(lambda x: clipped_mean(x, gain, offset, floor) - mean, low, high, xtol=1e-4))


def _block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor×factor blocks of the last two axes (trailing rows/columns that do not fill a block dropped)."""
    *lead, height, width = array.shape
    h, w = height // factor, width // factor
    blocks = array[..., : h * factor, : w * factor].reshape(*lead, h, factor, w, factor)
    return blocks.mean(axis=(-3, -1))


def slow_variation(image: np.ndarray, mask: np.ndarray, scale: float) -> float:
    """Spatial standard deviation of the background of one image smoothed at ``scale`` pixels (masked smoothing).

    Computed on a block-averaged copy (blocks of about scale/4 pixels), which changes the result very little
    and saves most of the time of a wide Gaussian. Returns the std of the smoothed background times sqrt(2) (see
    the module docstring), i.e. the ``std`` of :func:`background_field` that would give the same measurement.
    """
    factor = max(1, min(int(scale // 4), min(mask.shape[-2:]) // 4))
    weight_full = mask.astype(np.float32)
    weight = _block_mean(weight_full, factor)
    values = _block_mean(np.where(mask, image, 0).astype(np.float32), factor)
    sigma = (0,) * (mask.ndim - 2) + (scale / factor,) * 2
    weight = ndi.gaussian_filter(weight, sigma)
    smooth = ndi.gaussian_filter(values, sigma)
    valid = weight > 0.25
    if np.count_nonzero(valid) < 2:
        return 0.0
    return float(np.sqrt(2.0) * np.std(smooth[valid] / weight[valid]))


def background_field(shape: tuple[int, ...], level: float, std: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random smooth background: ``level + std * F``, F smoothed white noise of unit std (over a large canvas).

    Parameters
    ----------
    shape : tuple of int
        (Y, X) or (Z, Y, X).
    level, std, scale : float
        Mean level, spatial std, smoothing (pixels; the same along every axis).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray float32, shape ``shape``
    """
    if std <= 0:
        return np.full(shape, level, dtype=np.float32)
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), scale, mode="wrap")
    # Theoretical std of Gaussian-smoothed unit white noise, so that a small canvas varies as little as a small
    # window of a large one would (normalising by the canvas's own std would exaggerate it).
    field = field * (4.0 * np.pi * scale**2) ** (len(shape) / 4.0)
    return (level + std * field).astype(np.float32)
