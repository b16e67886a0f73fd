"""Stages 1 + 4: synthetic 2D label images from the mask model and population synthesis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.transform import rescale
from tqdm.auto import tqdm

from cellcascade.errors import CellcascadeError
from cellcascade.pipelines.mask import MaskDiffusionPipeline
from cellcascade.population import place_cells


@dataclass
class LabelImages:
    """Synthetic label images.

    Attributes
    ----------
    labels : list of ndarray uint16 (Y, X)
        Instance labels, ids 1..n consecutive, 0 = background.
    cells : list of list of dict
        Per image, the per-cell table of :func:`cellcascade.population.place_cells` (id, centroid, source, rotation,
        flipped, scale, clustered).
    seeds : list of int
        The seed of each image: image i depends only on (seed, i), not on how many images are made.
    """

    labels: list
    cells: list
    seeds: list


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a run with `seed` (independent streams via numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def to_image_scale(soft: np.ndarray, factor: float) -> np.ndarray:
    """Resize a crop-scale mask by `factor` and binarise it: one hole-free component, cropped to its bounding box.

    Parameters
    ----------
    soft : ndarray (S, S)
        Float32 model output in [-1, 1] (cell where > 0; resized smoothly, so outlines stay smooth), or bool mask.
    factor : float
        Image pixels per crop pixel (``1 / pixel_scale``).

    Returns
    -------
    ndarray bool (h, w)
    """
    soft = soft.astype(np.float32) * 2 - 1 if soft.dtype == bool else soft.astype(np.float32)
    if factor != 1.0:
        soft = rescale(soft, factor, order=1, anti_aliasing=False)
    mask = soft > 0
    components, count = ndi.label(mask)
    if count > 1:
        mask = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    mask = ndi.binary_fill_holes(mask)
    rows, cols = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def generate_label_images(
    mask_pipe: MaskDiffusionPipeline,
    n_images: int,
    size: tuple[int, int],
    *,
    cells: int | tuple[int, int] = (40, 49),
    density: float | None = None,
    clustering: float = 0.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    overlap_tolerance: float = 0.0,
    shapes_per_image: int = 16,
    num_inference_steps: int = 20,
    seed: int = 0,
    first_index: int = 0,
    progress: bool = True,
) -> LabelImages:
    """Make `n_images` label images of `size` (Y, X), each from its own freshly sampled cell shapes.

    Parameters
    ----------
    mask_pipe : MaskDiffusionPipeline
    n_images : int
    size : (int, int)
        Canvas (Y, X) in image pixels (the scale of the data the mask model learned from).
    cells : int or (min, max)
        Cells per image (fewer if the canvas is full).
    density : float, optional
        Cells per 10^4 pixels instead of `cells`.
    clustering : float in [0, 1]
        Probability that a cell is placed next to an existing one.
    scale_range : (float, float)
        Random size factor per cell.
    overlap_tolerance : float in [0, 1)
        Fraction of a cell's pixels that may overlap other cells.
    shapes_per_image : int
        Masks sampled per image; each cell uses one of them in a random pose.
    num_inference_steps : int
        Sampler steps of the mask model.
    seed : int
    first_index : int
        Index of the first image (for sharding a run over workers: images keep their seeds).

    Returns
    -------
    LabelImages
    """
    if n_images < 1:
        raise CellcascadeError(f"number of images must be positive, not {n_images}")
    if len(size) != 2 or min(size) < 8:
        raise CellcascadeError(f"image size must be two numbers of at least 8 pixels, not {tuple(size)}")
    factor = 1.0 / mask_pipe.config.pixel_scale
    out = LabelImages(labels=[], cells=[], seeds=[])
    for index in tqdm(range(first_index, first_index + n_images), desc="label images", disable=not progress):
        image_seed = sample_seed(seed, index)
        generator = torch.Generator().manual_seed(image_seed)
        soft = mask_pipe(shapes_per_image, num_inference_steps, generator=generator).soft
        shapes = [to_image_scale(s, factor) for s in soft]
        population = place_cells(
            shapes,
            tuple(size),
            n_cells=cells,
            density=density,
            clustering=clustering,
            scale_range=scale_range,
            overlap_tolerance=overlap_tolerance,
            rng=np.random.default_rng(image_seed),
        )
        out.labels.append(population.labels)
        out.cells.append(population.cells)
        out.seeds.append(image_seed)
    return out
