"""Train the texture model (stage 5) on patches of the real images, learning only pixels whose meaning is known.

Which pixels are learned (loss weight 1; all others 0)
------------------------------------------------------
The model learns p(image | label conditions). A pixel can be learned only if its condition is right, i.e. if we know
whether it is cell or background:

* **Dense annotation** (``item.dense``): every pixel (label 0 is background).
* **Sparse annotation** (the default for user data, where label 0 may hide unannotated cells):

  1. every annotated cell pixel;
  2. a margin of `margin` pixels around annotated cells (the cell edge and the blur halo: learned as background
     next to a cell), and every "dark" pixel: ``smooth < level + k·spread``, where ``smooth`` is the image
     smoothed with a Gaussian of `sigma` pixels and ``level``/``spread`` are the median and the MAD-based standard
     deviation of ``smooth`` over the unannotated pixels (mostly background in fluorescence images);
  3. minus everything within `guard` pixels of an *unannotated bright blob*: a connected component of bright
     (not dark) pixels outside the margin, unless the whole component lies within ``3·margin`` of an annotated
     cell (then it is the blur halo of that cell, not another cell).

  So unannotated cells, their dim outskirts and the bright pixels near them are never learned as "background
  texture"; the margin next to an annotated cell is dropped too where an unannotated cell touches it.

Patches are sampled at the images' own pixel scale; a fraction `centred_fraction` of them is centred (with a jitter
of ±patch/4) on a randomly chosen annotated cell, the rest at uniformly random positions. Patches with less than 5%
known pixels are redrawn.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy import ndimage as ndi

from cellcascade.data import AnnotatedImage, require_ndim
from cellcascade.errors import CellcascadeError
from cellcascade.models.conditions import CONDITION_NAMES, label_conditions
from cellcascade.models.unet import build_unet, check_preset_size
from cellcascade.pipelines.texture import TexturePipeline, to_unit
from cellcascade.training.loop import TrainConfig, train_denoiser
from cellcascade.training.mask import NOISE_SCHEDULE

MIN_KNOWN_FRACTION = 0.05


# The texture model predicts the velocity, not the noise: with epsilon prediction the image's mean level (the
# background) is decided at the noisiest steps, where an epsilon model's estimate of the clean image is amplified by
# 1/sqrt(alpha_bar) and drifts. Measured on the sample (600 steps, batch 16, preset "cpu"): epsilon gave a background
# of 82 (real 23) and noise std 20 (real 6.5); v-prediction gave 26 and 5.8.
PREDICTION_TYPE = "v_prediction"


@dataclass
class TexturePatches:
    """Training patches of the texture model.

    Attributes
    ----------
    images : Tensor float32 (N, 1, P, P)
        Intensities mapped to [-1, 1] with (intensity_low, intensity_high).
    conditions : Tensor float32 (N, 3, P, P)
        :func:`~cellcascade.models.conditions.label_conditions` of the whole label image, cropped.
    weights : Tensor float32 (N, 1, P, P)
        1 where the pixel is learned, 0 where its meaning is unknown (see :func:`known_pixels`).
    intensity_low, intensity_high : float
        The per-dataset range that maps to [-1, 1].
    """

    images: torch.Tensor
    conditions: torch.Tensor
    weights: torch.Tensor
    intensity_low: float
    intensity_high: float


def intensity_range(
    items: list[AnnotatedImage], low_percentile: float = 0.1, high_percentile: float = 99.9, seed: int = 0
) -> tuple[float, float]:
    """Robust per-dataset intensity range: percentiles of (up to 2 million) pixels pooled over all images.

    Returns
    -------
    (low, high) floats with high > low; raises CellcascadeError for constant data.
    """
    rng = np.random.default_rng(seed)
    per_image = max(1, 2_000_000 // max(1, len(items)))
    pooled = []
    for item in items:
        flat = np.asarray(item.image, np.float32).ravel()
        pooled.append(flat if flat.size <= per_image else rng.choice(flat, per_image, replace=False))
    values = np.concatenate(pooled)
    low, high = np.percentile(values, [low_percentile, high_percentile])
    if not high > low:
        low, high = values.min(), values.max()
    if not high > low:
        raise CellcascadeError("the images are constant: there is no texture to learn")
    return float(low), float(high)


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of `mask` (inf if there is none)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndi.distance_transform_edt(~mask)


def known_pixels(item: AnnotatedImage, margin: int = 3, guard: int = 6, sigma: float = 2.0, k: float = 3.0) -> np.ndarray:
    """Where the meaning of a pixel (cell or background) is known; the rule is in this module's docstring.

    Parameters
    ----------
    item : AnnotatedImage (2D or 3D)
    margin : int
        Pixels around annotated cells that are learned as background (unless near an unannotated bright blob).
    guard : int
        Pixels around unannotated bright blobs that are never learned.
    sigma : float
        Gaussian smoothing (pixels) before thresholding.
    k : float
        "Bright" means above the unannotated pixels' median + `k` robust standard deviations.

    Returns
    -------
    ndarray bool, shape of ``item.labels``.

    Examples
    --------
    >>> image = np.full((40, 60), 10.0); image[5:15, 5:15] = 100; image[20:30, 40:50] = 100
    >>> labels = np.zeros((40, 60), np.int32); labels[5:15, 5:15] = 1   # the second bright square is not annotated
    >>> known = known_pixels(AnnotatedImage(image, labels, "x", dense=False))
    >>> bool(known[10, 10]), bool(known[25, 45]), bool(known[35, 5])
    (True, False, True)
    """
    annotated = item.labels > 0
    if item.dense:
        return np.ones(item.labels.shape, dtype=bool)
    smooth = ndi.gaussian_filter(np.asarray(item.image, np.float32), sigma)
    rest = smooth[~annotated]
    level = float(np.median(rest))
    spread = 1.4826 * float(np.median(np.abs(rest - level)))
    if spread == 0:
        spread = float(rest.std()) or 1e-6
    bright = smooth > level + k * spread
    to_cell = _distance_to(annotated)
    near = to_cell <= margin
    components, _ = ndi.label(bright & ~near)
    far_from_cells = np.unique(components[(components > 0) & (to_cell > 3 * margin)])
    blobs = np.isin(components, far_from_cells)
    blob_zone = _distance_to(blobs) <= guard
    return annotated | ((near | ~bright) & ~blob_zone)


def texture_patches(
    items: list[AnnotatedImage],
    patch_size: int = 64,
    num_patches: int = 1024,
    *,
    centred_fraction: float = 0.75,
    margin: int = 3,
    seed: int = 0,
) -> TexturePatches:
    """Sample training patches (image, conditions, loss weights) from 2D annotated images.

    Parameters
    ----------
    items : list of AnnotatedImage (2D)
    patch_size : int
        Side P of the square patches, in image pixels. Smaller images are padded (weight 0 on the padding).
    num_patches : int
        How many patches to draw (sampled with replacement of positions; the training loop draws batches from them).
    centred_fraction : float
        Fraction of patches centred on a random annotated cell (the rest at random positions).
    margin : int
        See :func:`known_pixels`.
    seed : int
        Makes the draw reproducible.

    Returns
    -------
    TexturePatches
    """
    require_ndim(items, 2)
    if num_patches < 1:
        raise CellcascadeError(f"number of patches must be positive, not {num_patches}")
    low, high = intensity_range(items, seed=seed)
    rng = np.random.default_rng(seed)
    size = patch_size
    sources, cells = [], []
    for index, item in enumerate(items):
        pad = [(0, max(0, size - n)) for n in item.labels.shape]
        unit = np.pad(to_unit(item.image, low, high), pad, mode="reflect" if all(n > 1 for n in item.labels.shape) else "edge")
        conditions = np.pad(label_conditions(item.labels), [(0, 0), *pad])
        weights = np.pad(known_pixels(item, margin=margin).astype(np.float32), pad)
        sources.append((unit, conditions, weights))
        ids = np.unique(item.labels)[1:]
        cells += [(index, np.array(c)) for c in ndi.center_of_mass(item.labels > 0, item.labels, ids)]
    areas = np.array([s[0].size for s in sources], np.float64)
    images, conds, weights = [], [], []
    attempts = 0
    while len(images) < num_patches:
        attempts += 1
        if attempts > 20 * num_patches:
            raise CellcascadeError("too few pixels of known meaning in the images: annotate more cells")
        if cells and rng.random() < centred_fraction:
            index, centre = cells[rng.integers(len(cells))]
            corner = np.round(centre + rng.uniform(-size / 4, size / 4, 2) - size / 2).astype(int)
        else:
            index = int(rng.choice(len(sources), p=areas / areas.sum()))
            corner = np.array([rng.integers(0, n - size + 1) for n in sources[index][0].shape])
        unit, conditions, weight = sources[index]
        y, x = np.clip(corner, 0, np.array(unit.shape) - size)
        w = weight[y : y + size, x : x + size]
        if w.mean() < MIN_KNOWN_FRACTION:
            continue
        images.append(unit[y : y + size, x : x + size])
        conds.append(conditions[:, y : y + size, x : x + size])
        weights.append(w)
    return TexturePatches(
        images=torch.from_numpy(np.stack(images)[:, None]),
        conditions=torch.from_numpy(np.stack(conds)),
        weights=torch.from_numpy(np.stack(weights)[:, None]),
        intensity_low=low,
        intensity_high=high,
    )


def train_texture_model(
    items: list[AnnotatedImage],
    out_dir: str | Path,
    *,
    patch_size: int = 64,
    preset: str = "cpu",
    config: TrainConfig | None = None,
    num_patches: int = 1024,
    margin: int = 3,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
) -> TexturePipeline | None:
    """Train a texture model on patches of `items` and save it to `out_dir`.

    Checkpoints go to ``<out_dir>.checkpoint/`` and are resumed if present; the finished model is written to a
    temporary folder and renamed to `out_dir`, so `out_dir` exists only when complete.

    Parameters
    ----------
    items : list of AnnotatedImage (2D)
        Dense or sparse annotations (see the module docstring for what is learned).
    out_dir : path
        Must not exist yet.
    patch_size : int
        Training patch side in image pixels (also the tile side when generating).
    preset : {"tiny", "cpu", "gpu"}
        UNet size.
    config : TrainConfig
    num_patches : int
        Patches drawn once before training.
    margin : int
        Background margin learned around annotated cells (pixels).
    device : {"auto", "cpu", "cuda"}
    stop_after : int, optional
        Stop after this step, leaving the checkpoint (for tests of resume). Returns None then.

    Returns
    -------
    TexturePipeline with the EMA weights (or None if stopped early).

    Examples
    --------
    >>> pipe = train_texture_model(load_sample(), "texture-model", config=TrainConfig(steps=1500))  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    config = config or TrainConfig()
    check_preset_size(preset, patch_size, "patch size")
    if out_dir.exists():
        raise CellcascadeError(f"{out_dir}: already exists; choose another output folder or remove it")
    patches = texture_patches(items, patch_size, num_patches, margin=margin, seed=config.seed)
    schedule = {**NOISE_SCHEDULE, "prediction_type": PREDICTION_TYPE}
    torch.manual_seed(config.seed)  # the initial weights
    unet = build_unet(patch_size, 1 + len(CONDITION_NAMES), 1, preset=preset)
    work = out_dir.with_name(out_dir.name + ".checkpoint")
    unet = train_denoiser(
        unet, DDPMScheduler(**schedule), patches.images, work, config, conditions=patches.conditions,
        loss_weights=patches.weights, device=device, progress=progress, stop_after=stop_after,
    )
    if stop_after is not None and stop_after < config.steps:
        return None
    pipe = TexturePipeline(
        unet, DDIMScheduler(**schedule), intensity_low=patches.intensity_low,
        intensity_high=patches.intensity_high, tile_overlap=patch_size // 4,
    )
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    training = {
        "train_config": asdict(config), "patch_size": patch_size, "preset": preset, "num_patches": num_patches,
        "margin": margin, "known_fraction": float(patches.weights.mean()), "conditions": list(CONDITION_NAMES),
        "sources": sorted({item.name for item in items}),
    }
    (tmp / "training.json").write_text(json.dumps(training, indent=1))
    tmp.rename(out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return pipe
