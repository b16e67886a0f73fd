"""The imaging model: what a microscope adds to a clean fluorescence signal (background, blur, noise, dtype)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage as ndi

from cellcascade.data.annotated import AnnotatedImage
from cellcascade.errors import CellcascadeError
from cellcascade.imaging.background import background_field, background_level, background_mask, slow_variation
from cellcascade.imaging.noise import add_noise, censored_values, fit_noise, quantization_step
from cellcascade.imaging.psf import AXIAL_RATIO, fit_psf_sigma, volume_psf_sigmas

# The background's smoothing scale is this fraction of the smaller lateral image side (at least MIN_BACKGROUND_SCALE).
BACKGROUND_SCALE_FRACTION = 1.0 / 16.0
MIN_BACKGROUND_SCALE = 4.0


@dataclass
class ImagingModel:
    """Background + Gaussian PSF + Poisson-Gaussian noise + the real data's dtype, fitted to annotated images.

    ``apply`` turns a clean signal ``s`` (intensity above background) into an image::

        expected = gaussian_blur(s, psf) + background_level + background_std * F   (F: smooth random field)
        image    = noise_gain * Poisson(expected / noise_gain) + Normal(0, noise_offset)
        image    = clip(step * round(image / step)) as dtype   (variance ≈ gain·expected + offset + step²/12)

    Attributes (constructor arguments are the whole config; ``from_dict(to_dict())`` rebuilds it)
    ----------
    dtype : str
        Output dtype, e.g. "uint8", "uint16", "float32".
    background_level : float
        Mean background intensity (real units).
    background_std : float
        Spatial std of the slow background variation.
    background_scale : float
        Smoothing (pixels) of that variation.
    psf_sigma : float
        Lateral (Y, X) Gaussian PSF sigma, pixels.
    psf_sigma_z : float or None
        Axial sigma for (Z, Y, X) arrays; None = same as lateral.
    noise_gain : float
        Poisson gain ``a`` in ``variance = a * mean + b`` (≥ 0).
    noise_offset : float
        Signal-independent variance ``b`` (≥ 0; read noise).
    quantization_step : float
        Output levels are multiples of this (1 = plain rounding; more for data that was rescaled, e.g. GOWT1's
        uint8 frames use every 2nd-3rd value); 0 = no quantisation (float output).
    value_range : list of two floats or None
        Clip range of the output; None = the dtype's range for integers, no clipping for floats.

    Examples
    --------
    >>> model = ImagingModel(dtype="uint8", background_level=10, psf_sigma=1.5, noise_gain=1.0, noise_offset=4.0)
    >>> clean = np.zeros((64, 64), np.float32); clean[20:40, 20:40] = 100
    >>> image = model.apply(clean, np.random.default_rng(0))
    >>> image.dtype, image.shape
    (dtype('uint8'), (64, 64))
    """

    dtype: str = "uint16"
    background_level: float = 0.0
    background_std: float = 0.0
    background_scale: float = 32.0
    psf_sigma: float = 1.0
    psf_sigma_z: float | None = None
    noise_gain: float = 0.0
    noise_offset: float = 0.0
    quantization_step: float = 1.0
    value_range: list[float] | None = None

    def __post_init__(self) -> None:
        try:
            np.dtype(self.dtype)
        except TypeError:
            raise CellcascadeError(f"imaging model: unknown dtype {self.dtype!r}") from None
        if np.dtype(self.dtype).kind not in "uif":
            raise CellcascadeError(f"imaging model: dtype must be an integer or float type, not {self.dtype}")
        self.dtype = np.dtype(self.dtype).name
        for name in ("background_std", "background_scale", "psf_sigma", "noise_gain", "noise_offset", "quantization_step"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value < 0:
                raise CellcascadeError(f"imaging model: {name} must be a finite number ≥ 0, not {value}")
            setattr(self, name, value)
        self.background_level = float(self.background_level)
        if self.psf_sigma_z is not None:
            self.psf_sigma_z = float(self.psf_sigma_z)
            if not self.psf_sigma_z >= 0:
                raise CellcascadeError(f"imaging model: psf_sigma_z must be ≥ 0, not {self.psf_sigma_z}")
        if self.value_range is not None:
            low, high = (float(v) for v in self.value_range)
            if not low < high:
                raise CellcascadeError(f"imaging model: value_range must be [low, high] with low < high, not {self.value_range}")
            self.value_range = [low, high]

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, items: list[AnnotatedImage]) -> "ImagingModel":
        """Fit every parameter to real annotated images.

        Parameters
        ----------
        items : list of AnnotatedImage
            All 2D (Y, X) or all 3D (Z, Y, X); sparse or dense annotation.

        Returns
        -------
        ImagingModel

        Notes
        -----
        Order: PSF from annotated cell edges (:func:`~cellcascade.imaging.psf.fit_psf_sigma`), noise from all
        unclipped pixels (:func:`~cellcascade.imaging.noise.fit_noise`), then background level and slow variation
        from the known-background pixels (:func:`~cellcascade.imaging.background.background_mask`).
        """
        if not items:
            raise CellcascadeError("the imaging model needs at least one annotated image")
        ndims = {item.ndim for item in items}
        if len(ndims) > 1:
            raise CellcascadeError("the imaging model needs images of one dimensionality, found both 2D and 3D")
        dtype = np.result_type(*[item.image.dtype for item in items])
        if dtype.kind not in "uif":
            raise CellcascadeError(f"images must hold integer or float intensities, found dtype {dtype}")
        if dtype.kind == "f":
            dtype = np.dtype(np.float32)

        psf_sigma, psf_sigma_z = fit_psf_sigma(items)
        gain, offset = fit_noise([item.image for item in items])
        step = float(np.median([quantization_step(item.image) for item in items]))
        offset = max(offset - step**2 / 12.0, 0.0)  # quantisation in apply() adds this variance back

        masks = [background_mask(item, psf_sigma) for item in items]
        values = np.concatenate([item.image[mask].astype(np.float64) for item, mask in zip(items, masks)])
        if values.size == 0:
            raise CellcascadeError("cannot fit the background: no background pixel found")
        floors = [min(censored_values(item.image), default=None) for item in items]
        floors = [f for f, item in zip(floors, items) if f is not None and f == float(item.image.min())]
        floor = min(floors) if floors else None
        level = background_level(values, floor, gain, offset)

        lateral = min(min(item.labels.shape[-2:]) for item in items)
        scale = max(MIN_BACKGROUND_SCALE, lateral * BACKGROUND_SCALE_FRACTION)
        variations = [slow_variation(item.image, mask, scale) for item, mask in zip(items, masks)]
        # Saturation below the dtype's maximum (e.g. a 12-bit camera in uint16): every image piles up at its maximum.
        value_range = None
        tops = [float(item.image.max()) for item in items]
        saturated = all(top in censored_values(item.image) for top, item in zip(tops, items))
        if dtype.kind in "ui" and saturated and max(tops) < np.iinfo(dtype).max:
            value_range = [float(np.iinfo(dtype).min), max(tops)]
        return cls(
            dtype=dtype.name,
            background_level=level,
            background_std=float(np.sqrt(np.mean(np.square(variations)))),
            background_scale=float(scale),
            psf_sigma=psf_sigma,
            psf_sigma_z=psf_sigma_z,
            noise_gain=gain,
            noise_offset=offset,
            quantization_step=step,
            value_range=value_range,
        )

    # ------------------------------------------------------------------ simulation
    def blur(self, clean: np.ndarray) -> np.ndarray:
        """Gaussian PSF blur of a (Y, X) or (Z, Y, X) float array; returns float32 of the same shape."""
        sigma = (self.psf_sigma,) * 2
        if clean.ndim == 3:
            sigma = (self.psf_sigma if self.psf_sigma_z is None else self.psf_sigma_z,) + sigma
        return ndi.gaussian_filter(np.asarray(clean, dtype=np.float32), sigma, mode="nearest")

    def blur_volume(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float],
        *,
        axial_ratio: float = AXIAL_RATIO,
        lateral: bool = True,
    ) -> np.ndarray:
        """Anisotropic Gaussian PSF blur of a (Z, Y, X) volume with voxel size `spacing`.

        Parameters
        ----------
        volume : ndarray float (Z, Y, X)
        spacing : (dz, dy, dx)
            Voxel size (any one unit; the lateral pixel of the fitted data is taken to be dy).
        axial_ratio : float
            Axial / lateral PSF width where no axial sigma was fitted (``psf_sigma_z`` None, i.e. 2D data); see
            :func:`~cellcascade.imaging.psf.volume_psf_sigmas`.
        lateral : bool
            Blur along Y and X too; False blurs along z only (for signals that already carry the lateral blur,
            such as slices drawn by the texture model).

        Returns
        -------
        ndarray float32 (Z, Y, X)
        """
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise CellcascadeError(f"expected a 3D (Z, Y, X) volume, found shape {volume.shape}")
        sigma_z, sigma_y, sigma_x = volume_psf_sigmas(self.psf_sigma, self.psf_sigma_z, spacing, axial_ratio)
        sigma = (sigma_z, sigma_y, sigma_x) if lateral else (sigma_z, 0.0, 0.0)
        return ndi.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma, mode="nearest")

    def apply(self, clean: np.ndarray, rng: np.random.Generator | int | None = None, blur: bool = True) -> np.ndarray:
        """Image a clean signal: blur, add background, add noise, round and clip to the real dtype.

        Parameters
        ----------
        clean : ndarray float, shape (Y, X) or (Z, Y, X)
            Noise-free fluorescence *above background* (0 outside cells), in the real data's intensity units.
        rng : numpy.random.Generator, int or None
            Randomness (background field, noise); an int is a seed.
        blur : bool
            Apply the PSF; False if the caller has blurred (part of) the signal itself.

        Returns
        -------
        ndarray of ``self.dtype``, same shape
        """
        clean = np.asarray(clean)
        if clean.ndim not in (2, 3):
            raise CellcascadeError(f"the clean signal must be 2D (Y, X) or 3D (Z, Y, X), found shape {clean.shape}")
        if clean.dtype.kind not in "uifb" or not np.all(np.isfinite(clean)):
            raise CellcascadeError("the clean signal must be a finite real-valued array")
        rng = np.random.default_rng(rng)
        expected = self.blur(clean) if blur else clean.astype(np.float32)
        expected += background_field(clean.shape, self.background_level, self.background_std, self.background_scale, rng)
        noisy = add_noise(expected, self.noise_gain, self.noise_offset, rng)
        dtype = np.dtype(self.dtype)
        low, high = self.output_range()
        if self.quantization_step > 0:
            noisy = self.quantization_step * np.rint(noisy / self.quantization_step)
        if dtype.kind in "ui":
            noisy = np.rint(noisy)
        if low is not None:
            noisy = np.clip(noisy, low, high)
        return noisy.astype(dtype)

    def output_range(self) -> tuple[float | None, float | None]:
        """(low, high) clip range of ``apply``'s output; (None, None) means no clipping."""
        if self.value_range is not None:
            return self.value_range[0], self.value_range[1]
        dtype = np.dtype(self.dtype)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return float(info.min), float(info.max)
        return None, None

    def noise_std(self, mean: float) -> float:
        """Noise standard deviation at a given mean intensity."""
        return float(np.sqrt(max(self.noise_gain * mean + self.noise_offset, 0.0)))

    def summary(self) -> str:
        """One line for logs and reports."""
        z = "" if self.psf_sigma_z is None else f", psf_sigma_z={self.psf_sigma_z:.2f}"
        return (
            f"{self.dtype}, background {self.background_level:.2f} ± {self.background_std:.2f} "
            f"(scale {self.background_scale:.0f} px), psf_sigma={self.psf_sigma:.2f}{z} px, "
            f"noise variance = {self.noise_gain:.4g}·mean + {self.noise_offset:.4g}, step {self.quantization_step:.3g}"
        )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """JSON-serialisable dict of the constructor arguments."""
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "ImagingModel":
        """Rebuild from :meth:`to_dict` output (unknown keys are an error)."""
        if not isinstance(config, dict):
            raise CellcascadeError("imaging model config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise CellcascadeError(f"imaging model config: unknown keys {unknown}")
        return cls(**config)
