"""Poisson-Gaussian noise: variance = gain * mean + offset, fitted from local means and local noise residuals.

The estimate follows Foi et al. (2008) in spirit: pair each pixel's local mean with a local noise sample, group
the pairs into bins of equal count along the mean, take a robust variance per bin, and fit a straight line.

- Noise sample: the Immerkær (1996) kernel ``[1,-2,1] ⊗ [1,-2,1] / 6`` on the last two axes. It cancels constant
  and linear intensity (flat regions and ramps), and on white noise of variance ``v`` its output has variance ``v``.
- Robust per-bin variance: ``(1.4826 * MAD)²``, so the minority of pixels on edges or texture does not inflate it.
- Clipping: pixels whose 3×3 neighbourhood touches a censored value (the image minimum or maximum when many pixels
  sit there, e.g. a background clipped at 0) are left out; their variance is biased low.
- Fit: robust (soft-L1) least squares of ``var = gain * mean + offset`` with ``gain ≥ 0``, ``offset ≥ 0``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import least_squares

from cellcascade.errors import CellcascadeError

# A value is "censored" (clipped) when at least this fraction of an image's pixels equal it.
CENSORED_FRACTION = 1e-3
N_BINS = 40
MIN_PIXELS_PER_BIN = 50


def censored_values(image: np.ndarray) -> list[float]:
    """The image's minimum and/or maximum when at least ``CENSORED_FRACTION`` of its pixels sit there (clipping)."""
    out = []
    for value in (image.min(), image.max()):
        if np.count_nonzero(image == value) >= CENSORED_FRACTION * image.size and float(value) not in out:
            out.append(float(value))
    return out


def quantization_step(image: np.ndarray) -> float:
    """Spacing of the intensity levels an integer image uses (1 for raw camera data; more for rescaled data).

    Estimated as (range of the central 99.8 % of values) / (number of distinct values there - 1), and kept only
    when it is at least 1.5 and the levels are regular (no gap wider than twice that), else 1; 0 for float images.
    """
    if image.dtype.kind not in "ui":
        return 0.0
    low, high = np.percentile(image, [0.1, 99.9])
    levels = np.unique(image[(image >= low) & (image <= high)])
    if levels.size < 3:
        return 1.0
    step = float(levels[-1] - levels[0]) / (levels.size - 1)
    if step < 1.5 or np.diff(levels).max() > 2 * step + 1e-9:
        return 1.0  # every value used (a few missing ones do not make a lattice), or irregular gaps
    return step


def noise_samples(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local means and noise residuals of one image, at pixels free of clipping.

    Parameters
    ----------
    image : ndarray, shape (Y, X) or (Z, Y, X), any real dtype

    Returns
    -------
    means : ndarray float32, shape (N,)
        3×3 local mean (last two axes) at the usable pixels.
    residuals : ndarray float32, shape (N,)
        Immerkær residual at the same pixels; variance = noise variance for white noise.
    """
    values = image.astype(np.float32)
    lead = (1,) * (values.ndim - 2)
    kernel = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0]).reshape(lead + (3, 3)) / 6.0
    residual = ndi.convolve(values, kernel.astype(np.float32), mode="reflect")
    mean = ndi.uniform_filter(values, size=lead + (3, 3), mode="reflect")
    usable = np.zeros(values.shape, dtype=bool)
    usable[..., 1:-1, 1:-1] = True
    for value in censored_values(image):
        near = ndi.maximum_filter(image == value, size=lead + (3, 3), mode="constant")
        usable &= ~near
    return mean[usable], residual[usable]


def binned_variances(means: np.ndarray, residuals: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group (mean, residual) pairs into bins of equal count along the mean; robust variance per bin.

    Returns
    -------
    bin_means, bin_variances, bin_counts : ndarray float64, shape (B,)
    """
    order = np.argsort(means, kind="stable")
    chunks = np.array_split(order, n_bins)
    bin_means, bin_vars, counts = [], [], []
    for chunk in chunks:
        if len(chunk) < MIN_PIXELS_PER_BIN:
            continue
        r = residuals[chunk].astype(np.float64)
        mad = np.median(np.abs(r - np.median(r)))
        bin_means.append(float(np.mean(means[chunk])))
        bin_vars.append(float((1.4826 * mad) ** 2))
        counts.append(float(len(chunk)))
    return np.array(bin_means), np.array(bin_vars), np.array(counts)


def fit_noise(images: list[np.ndarray]) -> tuple[float, float]:
    """Fit ``variance = gain * mean + offset`` (both ≥ 0) to the noise of real images.

    Parameters
    ----------
    images : list of ndarray, each (Y, X) or (Z, Y, X)
        Raw images (any content: cells, background; annotations are not needed).

    Returns
    -------
    gain, offset : float
        In the images' intensity units (offset includes read noise and quantisation).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> flat = np.full((256, 256), 100.0)
    >>> noisy = flat + rng.normal(0, 3, flat.shape)
    >>> gain, offset = fit_noise([noisy])
    >>> bool(abs(gain * 100 + offset - 9) < 1.5)
    True
    """
    pairs = [noise_samples(image) for image in images]
    means = np.concatenate([p[0] for p in pairs])
    residuals = np.concatenate([p[1] for p in pairs])
    if means.size < MIN_PIXELS_PER_BIN * 2:
        raise CellcascadeError("cannot fit the noise: too few unclipped pixels in the images")
    bin_means, bin_vars, counts = binned_variances(means, residuals)
    # Relative errors: a variance estimated from n pixels has standard error ~ var * sqrt(2 / n).
    scale = np.maximum(bin_vars, 1e-6 * max(bin_vars.max(), 1e-12)) * np.sqrt(2.0 / counts)

    def residual(params):
        return (params[0] * bin_means + params[1] - bin_vars) / scale

    start = np.polyfit(bin_means, bin_vars, 1) if np.ptp(bin_means) > 0 else np.array([0.0, np.median(bin_vars)])
    start = np.maximum(start, 0.0)
    result = least_squares(residual, start, bounds=([0.0, 0.0], [np.inf, np.inf]), loss="soft_l1", f_scale=3.0)
    gain, offset = (float(v) for v in result.x)
    return gain, offset


def add_noise(expected: np.ndarray, gain: float, offset: float, rng: np.random.Generator) -> np.ndarray:
    """Draw a noisy image: ``gain * Poisson(expected / gain) + Normal(0, offset)`` (variance gain·expected + offset).

    Parameters
    ----------
    expected : ndarray float, any shape
        Noise-free intensities (values below 0 get only the Gaussian part).
    gain, offset : float
        Noise parameters (≥ 0).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray float32, same shape
    """
    expected = np.asarray(expected, dtype=np.float64)
    positive = np.maximum(expected, 0.0)
    if gain > 0:
        noisy = gain * rng.poisson(positive / gain) + (expected - positive)
    else:
        noisy = expected.copy()
    if offset > 0:
        noisy = noisy + rng.normal(0.0, np.sqrt(offset), size=expected.shape)
    return noisy.astype(np.float32)
