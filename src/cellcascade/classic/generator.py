"""The classic (non-learned) simulator: perturbed ellipses, smoothed-noise texture, a fitted imaging model.

This is what a user gets without diffusion models, and the baseline every learned stage has to beat. Everything
it knows comes from the annotated cells:

- sizes: the (major, minor) axis lengths of every annotated single-piece cell that does not touch the image border
  (empirical, resampled with a small multiplicative jitter; areas kept within the real range);
- shape irregularity: how far real outlines deviate from their moment ellipse (relative radius std, with the
  pixelation of a perfect ellipse of the same size subtracted);
- intensity: every cell's mean above the background level, corrected for the edge blur (empirical, resampled);
- texture: each cell's within-cell intensity std / mean after removing the fitted noise variance (drawn together
  with that cell's intensity); the texture is Gaussian-smoothed noise whose scale ``texture_scale`` matches the
  real texture's correlation at 2 pixels. It multiplies the *blurred* cell bodies: the edge-fitted PSF is wider
  than the blur that real textures show (rounded nuclei roll off over several pixels at their rims), so blurring
  the texture with it would wash it out;
- density: cells per 10^4 pixels (dense data: annotated cells over the image area; sparse data: the foreground
  area, annotated cells plus above-threshold pixels, divided by the mean cell area);
- the imaging model (:class:`~cellcascade.imaging.ImagingModel`).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import find_contours, regionprops

from cellcascade.data.annotated import AnnotatedImage, require_ndim
from cellcascade.errors import CellcascadeError
from cellcascade.imaging import ImagingModel, foreground_mask
from cellcascade.population import place_cells

# Harmonics (2..5) of the radial perturbation of generated ellipses.
HARMONICS = (2, 3, 4, 5)
MIN_INTERIOR_PIXELS = 20
# Lag (pixels) of the texture correlation that sets the texture scale, and the scale's clamp range.
LAG = 2
TEXTURE_SCALE_RANGE = (0.5, 8.0)


@dataclass
class ClassicGenerator:
    """Fitted classic simulator of 2D fluorescence images of cells with dense instance labels.

    Attributes (constructor arguments are the whole config; ``from_dict(to_dict())`` rebuilds it)
    ----------
    imaging : ImagingModel or dict
        Background, PSF, noise and dtype of the real data.
    axes : list of [major, minor]
        Axis lengths (pixels, full lengths of the moment ellipse) of the real cells.
    intensities : list of float
        Clean mean intensity above background of the real cells.
    contrasts : list of float
        Std / mean of the clean within-cell texture of each real cell (same order as ``intensities``; cells too
        small to measure get the median), drawn together with the intensity.
    density : float
        Cells per 10^4 pixels.
    irregularity : float
        Relative std of the outline radius around the ellipse.
    texture_scale : float
        Smoothing (pixels) of the texture noise.
    size_jitter, intensity_jitter : float
        Std of the log-normal jitter applied to resampled axis lengths and intensities.
    area_range : [float, float]
        Smallest and largest real cell area (pixels); generated areas are kept inside it.

    Examples
    --------
    >>> from cellcascade.data import load_sample
    >>> generator = ClassicGenerator.fit(load_sample())
    >>> image, labels = generator.generate((128, 128), rng=0)
    >>> image.dtype, labels.dtype, image.shape
    (dtype('uint16'), dtype('uint16'), (128, 128))
    """

    imaging: ImagingModel
    axes: list = field(default_factory=list)
    intensities: list = field(default_factory=list)
    contrasts: list | None = None
    density: float = 1.0
    irregularity: float = 0.03
    texture_scale: float = 2.0
    size_jitter: float = 0.05
    intensity_jitter: float = 0.05
    area_range: list | None = None

    def __post_init__(self) -> None:
        if isinstance(self.imaging, dict):
            self.imaging = ImagingModel.from_dict(self.imaging)
        if not isinstance(self.imaging, ImagingModel):
            raise CellcascadeError("classic generator: imaging must be an ImagingModel or its dict")
        axes = np.asarray(self.axes, dtype=np.float64)
        if axes.ndim != 2 or axes.shape[1] != 2 or len(axes) == 0 or not np.all(axes > 0):
            raise CellcascadeError("classic generator: axes must be a non-empty list of [major, minor] lengths > 0")
        self.axes = axes.tolist()
        intensities = np.asarray(self.intensities, dtype=np.float64)
        if intensities.ndim != 1 or len(intensities) == 0 or not np.all(np.isfinite(intensities)):
            raise CellcascadeError("classic generator: intensities must be a non-empty list of numbers")
        self.intensities = intensities.tolist()
        if self.contrasts is None:
            self.contrasts = [0.1] * len(self.intensities)
        contrasts = np.asarray(self.contrasts, dtype=np.float64)
        if contrasts.shape != intensities.shape or not np.all(contrasts >= 0):
            raise CellcascadeError("classic generator: contrasts must be one number ≥ 0 per intensity")
        self.contrasts = contrasts.tolist()
        for name in ("density", "irregularity", "texture_scale", "size_jitter", "intensity_jitter"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
                raise CellcascadeError(f"classic generator: {name} must be a number ≥ 0, not {value!r}")
            setattr(self, name, float(value))
        if self.area_range is None:
            areas = np.pi / 4 * axes[:, 0] * axes[:, 1]
            self.area_range = [float(areas.min()), float(areas.max())]
        low, high = (float(v) for v in self.area_range)
        if not 0 < low <= high:
            raise CellcascadeError(f"classic generator: area_range must be [min, max] with 0 < min ≤ max, not {self.area_range}")
        self.area_range = [low, high]

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, items: list[AnnotatedImage], texture_scale: float | None = None) -> "ClassicGenerator":
        """Learn sizes, shapes, intensities, texture contrast, density and the imaging model from annotated 2D images.

        Parameters
        ----------
        items : list of AnnotatedImage
            2D (Y, X) images, sparse or dense annotation.
        texture_scale : float, optional
            Smoothing (pixels) of the generated texture noise; None estimates it from the correlation of real
            within-cell intensities 2 pixels apart (see :func:`texture_scale_from_correlation`).

        Examples
        --------
        >>> from cellcascade.data import load_sample
        >>> generator = ClassicGenerator.fit(load_sample())
        >>> 1 < generator.density < 10  # cells per 10^4 pixels (125 on 512×512)
        True

        Returns
        -------
        ClassicGenerator
        """
        if not items:
            raise CellcascadeError("the classic generator needs at least one annotated image")
        require_ndim(items, 2)
        imaging = ImagingModel.fit(items)
        psf = imaging.psf_sigma
        level = imaging.background_level
        axes, intensities, contrasts, correlations, excess = [], [], [], [], []
        n_cells_estimate, total_area = 0.0, 0.0
        areas_per_item: list[list[float]] = []
        for item in items:
            image = item.image.astype(np.float64)
            height, width = item.labels.shape
            cell_areas = []
            areas_per_item.append(cell_areas)
            for region in regionprops(item.labels):
                pad = int(np.ceil(3 * psf)) + 2
                r0, c0, r1, c1 = region.bbox
                window = (slice(max(r0 - pad, 0), r1 + pad), slice(max(c0 - pad, 0), c1 + pad))
                own = item.labels[window] == region.label
                values = image[window]
                # Blur attenuation: the observed mean is the clean mean times the mean of the blurred mask.
                attenuation = float(ndi.gaussian_filter(own.astype(np.float64), psf, mode="constant")[own].mean())
                intensities.append(max((float(values[own].mean()) - level) / max(attenuation, 1e-3), 0.0))
                contrast, correlation = _texture_stats(values, own, psf, level, imaging)
                contrasts.append(contrast)
                if correlation is not None:
                    correlations.append(correlation)
                touches = r0 == 0 or c0 == 0 or r1 == height or c1 == width
                # Shape statistics only from whole, single-piece cells (some real labels hold two pieces).
                if touches or region.axis_minor_length <= 0 or ndi.label(region.image)[1] != 1:
                    continue
                axes.append([float(region.axis_major_length), float(region.axis_minor_length)])
                cell_areas.append(float(region.area))
                cell = np.pad(region.image, 2)
                measured = _outline_deviation(cell)
                ideal = _outline_deviation(_ideal_ellipse_like(cell))
                if measured is not None and ideal is not None:
                    excess.append(measured**2 - ideal**2)
            n_annotated = len(np.unique(item.labels)) - 1
            if item.dense or not cell_areas:
                n_cells_estimate += n_annotated
            else:
                n_cells_estimate += max(n_annotated, foreground_mask(item).sum() / np.mean(cell_areas))
            total_area += item.labels.size
        if not axes:
            raise CellcascadeError("no annotated cell lies wholly inside its image: cannot learn cell sizes")
        all_areas = [area for item_areas in areas_per_item for area in item_areas]
        if texture_scale is None:
            texture_scale = texture_scale_from_correlation(np.median(correlations)) if correlations else 2.0
        measured = [c for c in contrasts if c is not None]
        typical = float(np.median(measured)) if measured else 0.0
        contrasts = [typical if c is None else c for c in contrasts]
        return cls(
            imaging=imaging,
            axes=axes,
            intensities=intensities,
            contrasts=contrasts,
            density=float(1e4 * n_cells_estimate / total_area),
            irregularity=float(np.sqrt(max(np.median(excess), 0.0))) if excess else 0.0,
            texture_scale=float(texture_scale),
            area_range=[min(all_areas), max(all_areas)],
        )

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        shape: tuple[int, int] = (512, 512),
        rng: np.random.Generator | int | None = None,
        n_cells: int | tuple[int, int] | None = None,
        clustering: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Generate one image with dense instance labels.

        Parameters
        ----------
        shape : (int, int)
            (Y, X) canvas size, each ≥ 16.
        rng : numpy.random.Generator, int or None
            Randomness; the same seed gives the same image and labels.
        n_cells : int, (int, int) or None
            Number of cells (or an inclusive range); None follows the real density.
        clustering : float in [0, 1]
            Probability that a cell is placed next to existing cells.

        Returns
        -------
        image : ndarray, shape (Y, X), dtype of the real data
        labels : ndarray uint16, shape (Y, X)
            0 = background, cells 1..n.
        """
        try:
            shape = tuple(int(n) for n in shape)
        except (TypeError, ValueError):
            raise CellcascadeError(f"shape must be a (Y, X) pair of sizes, not {shape!r}") from None
        if len(shape) != 2 or min(shape) < 16:
            raise CellcascadeError(f"the classic generator makes 2D images of at least 16×16 pixels, not {shape}")
        rng = np.random.default_rng(rng)
        expected = self.density * shape[0] * shape[1] / 1e4 if n_cells is None else np.max(n_cells)
        shapes = self.sample_shapes(max(32, int(2 * expected)), rng)
        count = dict(density=self.density) if n_cells is None else dict(n_cells=n_cells)
        population = place_cells(shapes, shape, clustering=clustering, rotate=True, flip=True, rng=rng, **count)
        labels = population.labels
        n = len(population.cells)
        means = np.zeros(n + 1, dtype=np.float32)
        contrasts = np.zeros(n + 1, dtype=np.float32)
        drawn = rng.integers(len(self.intensities), size=n)  # a real cell's intensity with its own contrast
        means[1:] = np.asarray(self.intensities)[drawn] * np.exp(rng.normal(0, self.intensity_jitter, n))
        contrasts[1:] = np.asarray(self.contrasts)[drawn]
        texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), self.texture_scale, mode="wrap")
        texture *= np.sqrt(4 * np.pi) * self.texture_scale  # unit std (smoothed white noise has var 1/(4π s²))
        # The PSF (fitted to cell edges) blurs the cell bodies; the texture is measured after blurring, so it
        # modulates the blurred signal.
        signal = self.imaging.blur(means[labels]) * (1 + contrasts[labels] * texture)
        image = self.imaging.apply(np.maximum(signal, 0), rng, blur=False)
        return image, labels

    def sample_shapes(self, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        """`count` axis-aligned perturbed ellipses (bool (h, w) arrays) with resampled real sizes."""
        axes = np.asarray(self.axes)[rng.integers(len(self.axes), size=count)]
        axes = axes * np.exp(rng.normal(0, self.size_jitter, axes.shape))
        areas = np.pi / 4 * axes[:, 0] * axes[:, 1]
        axes *= np.sqrt(np.clip(areas, *self.area_range) / areas)[:, None]
        return [perturbed_ellipse(major / 2, minor / 2, self.irregularity, rng) for major, minor in axes]

    def summary(self) -> str:
        """One line for logs and reports."""
        areas = np.pi / 4 * np.prod(np.asarray(self.axes), axis=1)
        return (
            f"{len(self.axes)} cells, area {np.median(areas):.0f} px (range {self.area_range[0]:.0f}-"
            f"{self.area_range[1]:.0f}), intensity {np.median(self.intensities):.1f} above background, "
            f"texture contrast {np.median(self.contrasts):.3f}, irregularity {self.irregularity:.3f}, "
            f"density {self.density:.2f} cells/10^4 px; imaging: {self.imaging.summary()}"
        )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """JSON-serialisable dict of the constructor arguments (the imaging model as a nested dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "ClassicGenerator":
        """Rebuild from :meth:`to_dict` output (unknown keys are an error)."""
        if not isinstance(config, dict):
            raise CellcascadeError("classic generator config must be a JSON object")
        unknown = sorted(set(config) - {f.name for f in fields(cls)})
        if unknown:
            raise CellcascadeError(f"classic generator config: unknown keys {unknown}")
        if "imaging" not in config:
            raise CellcascadeError("classic generator config: the 'imaging' entry is missing")
        return cls(**config)


def perturbed_ellipse(semi_major: float, semi_minor: float, irregularity: float, rng: np.random.Generator) -> np.ndarray:
    """Bool mask (h, w) of an axis-aligned ellipse (major axis along Y) whose radius wobbles by low harmonics.

    The outline is ``rho(theta) = 1 + sum_k c_k cos(k theta + phi_k)`` in ellipse-normalised coordinates, k in
    2..5, ``c_k ~ Normal(0, irregularity² / 2)`` so the radius' relative std is about ``irregularity``.
    """
    coefficients = rng.normal(0, irregularity / np.sqrt(2), len(HARMONICS))
    phases = rng.uniform(0, 2 * np.pi, len(HARMONICS))
    reach = max(semi_major, semi_minor) * (1 + min(np.abs(coefficients).sum(), 0.5)) + 1
    half = int(np.ceil(reach))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    theta = np.arctan2(yy, xx)
    radius = np.sqrt((yy / semi_major) ** 2 + (xx / semi_minor) ** 2)
    outline = 1 + sum(c * np.cos(k * theta + p) for k, c, p in zip(HARMONICS, coefficients, phases))
    mask = radius <= np.clip(outline, 0.5, 1.5)
    if not mask.any():
        mask[half, half] = True
    labelled, count = ndi.label(mask)
    if count > 1:
        mask = labelled == (np.argmax(np.bincount(labelled.ravel())[1:]) + 1)
    rows, cols = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _outline_deviation(mask: np.ndarray) -> float | None:
    """Relative std of the outline radius of a cell (bool (h, w)) in the coordinates of its moment ellipse."""
    rows, cols = np.nonzero(mask)
    if rows.size < 10:
        return None
    centre = np.array([rows.mean(), cols.mean()])
    cov = np.cov(np.stack([rows, cols]))
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    if eigenvalues.min() <= 0:
        return None
    contours = find_contours(np.pad(mask.astype(float), 1), 0.5)
    if not contours:
        return None
    outline = max(contours, key=len) - 1 - centre
    normalised = (outline @ eigenvectors) / (2 * np.sqrt(eigenvalues))
    rho = np.linalg.norm(normalised, axis=1)
    return float(rho.std() / rho.mean())


def _ideal_ellipse_like(mask: np.ndarray) -> np.ndarray:
    """Pixelated perfect ellipse with the moments (centre, axes, orientation) of `mask`."""
    rows, cols = np.nonzero(mask)
    centre = np.array([rows.mean(), cols.mean()])
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(np.stack([rows, cols])))
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    offsets = np.stack([yy - centre[0], xx - centre[1]], axis=-1) @ eigenvectors
    return np.sum((offsets / (2 * np.sqrt(np.maximum(eigenvalues, 1e-6)))) ** 2, axis=-1) <= 1


def _texture_stats(values: np.ndarray, own: np.ndarray, psf: float, level: float, imaging: ImagingModel):
    """Within-cell texture of one cell: (contrast, lag-2 correlation), or (None, None) if too small or too dim.

    Uses the interior (eroded by ``ceil(2 psf)`` so the blurred edge is left out). Contrast = texture std / mean
    above background, with the noise variance the imaging model predicts subtracted. The correlation of texture
    values 2 pixels apart (along Y and X; white noise does not enter it) tells the texture's spatial scale.
    """
    interior = ndi.binary_erosion(own, iterations=int(np.ceil(2 * psf)))
    if interior.sum() < MIN_INTERIOR_PIXELS:
        return None, None
    inside = values[interior]
    mean = float(inside.mean())
    signal = mean - level
    if signal <= 0:
        return None, None
    noise_variance = imaging.noise_gain * mean + imaging.noise_offset + imaging.quantization_step**2 / 12
    texture_variance = float(inside.var()) - noise_variance
    contrast = float(np.sqrt(max(texture_variance, 0.0)) / signal)
    centred = np.where(interior, values - mean, 0.0)
    products, pairs = 0.0, 0
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -LAG), slice(LAG, None)
        both = interior[tuple(a)] & interior[tuple(b)]
        products += float((centred[tuple(a)] * centred[tuple(b)])[both].sum())
        pairs += int(both.sum())
    if texture_variance <= 0 or pairs < MIN_INTERIOR_PIXELS:
        return contrast, None
    return contrast, products / pairs / texture_variance


def texture_scale_from_correlation(correlation: float) -> float:
    """Smoothing (pixels) of a Gaussian-smoothed noise texture with the given correlation at distance ``LAG``.

    Smoothed white noise with smoothing ``s`` has correlation ``exp(-d² / (4 s²))`` at distance d.
    """
    correlation = float(np.clip(correlation, 0.01, 0.99))
    return float(np.clip(np.sqrt(-(LAG**2) / (4 * np.log(correlation))), *TEXTURE_SCALE_RANGE))
