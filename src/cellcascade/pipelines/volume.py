"""The 3D cascade: one densely annotated (Z, Y, X) volume from a cascade that has a multiview stage.

Stages, in order (each from a seed derived from the run's seed and the volume's index, so volume i is the same
whatever the number of volumes or workers):

1. mask model: ``shapes_per_volume`` 2D single-cell masks (pixels of the training data);
2. + 3. multiview model + fast reconstruction: each mask lifted to a 3D cell at the voxel spacing
   (:func:`~cellcascade.pipelines.lift.lift_masks`);
4. population: the 3D cells placed in the volume, rotated about z, with the clustering probability
   (:func:`~cellcascade.population.place_cells_3d`);
5. texture, slice by slice with z-correlated noise (:func:`~cellcascade.pipelines.texture3d.texture_volume`);
6. imaging: the missing axial blur (only where an axial PSF is known) and camera noise
   (:func:`~cellcascade.pipelines.texture3d.finish_volume`).

Lengths are in pixels of the 2D training data: ``spacing = (dz, 1, 1)`` with ``dz`` the z step in those pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from cellcascade.errors import CellcascadeError
from cellcascade.imaging.psf import DEFAULT_AXIAL_PSF
from cellcascade.pipelines.cascade import Cascade, GeneratedSample
from cellcascade.pipelines.labels import sample_seed, to_image_scale
from cellcascade.pipelines.lift import lift_masks
from cellcascade.pipelines.texture3d import finish_volume, texture_volume
from cellcascade.population import place_cells_3d


def generate_volume(
    cascade: Cascade,
    index: int,
    shape: tuple[int, int, int],
    *,
    z_step: float = 2.0,
    seed: int = 0,
    cells: int | tuple[int, int] = (40, 49),
    density: float | None = None,
    clustering: float = 0.3,
    scale_range: tuple[float, float] = (0.9, 1.1),
    overlap_tolerance: float = 0.0,
    shapes_per_volume: int = 16,
    mask_steps: int = 20,
    multiview_steps: int = 20,
    texture_steps: int = 20,
    fit_steps: int | None = None,
    axial_psf: float = DEFAULT_AXIAL_PSF,
    device: str = "cpu",
) -> GeneratedSample:
    """Volume `index` of a run with `seed` (see the module notes).

    Parameters
    ----------
    cascade : Cascade
        Must have a multiview stage (``cascade.multiview``).
    index : int
    shape : (Z, Y, X)
        Volume size in voxels.
    z_step : float
        dz, the z spacing in xy pixels of the training data (> 0).
    cells, density
        Cell count (a number or an inclusive range), or cells per 10^6 cubic pixels instead.
    clustering, scale_range, overlap_tolerance
        As in 2D (:func:`~cellcascade.population.place_cells_3d`).
    shapes_per_volume : int
        2D masks sampled and lifted per volume; cells reuse them in random poses.
    mask_steps, multiview_steps, texture_steps : int
        Sampler steps of the three diffusion models.
    fit_steps : int, optional
        Steps of the fast reconstruction (default: its default, 50).
    axial_psf : float
        Axial / lateral PSF width where the imaging model has no fitted axial PSF: blur along z what the slice-wise
        texture lacks of such a PSF (:func:`~cellcascade.pipelines.texture3d.finish_volume`). Default
        ``DEFAULT_AXIAL_PSF`` (1.05, calibrated on generated volumes: see its comment); 1 adds no blur.
    device : str
        Where the reconstruction runs (the pipelines run where they were loaded).

    Returns
    -------
    GeneratedSample
        ``image`` (Z, Y, X) in the real data's dtype, ``labels`` uint16 (Z, Y, X), ``cells`` the per-cell table of
        :func:`~cellcascade.population.place_cells_3d` plus ``shape`` ("multiview", or "ellipsoid" for a cell
        whose views could not be reconstructed), ``seed``.
    """
    if cascade.multiview is None:
        raise CellcascadeError("this cascade has no 3D (multiview) stage: fit one with `cellcascade fit DATA --3d`")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 8:
        raise CellcascadeError(f"volume size must be Z Y X with Y, X of at least 8 voxels, not {shape}")
    if not (np.isfinite(z_step) and z_step > 0):
        raise CellcascadeError(f"z step must be a positive number, not {z_step}")
    spacing = (float(z_step), 1.0, 1.0)
    volume_seed = sample_seed(seed, index)
    generator = torch.Generator().manual_seed(volume_seed)
    factor = 1.0 / cascade.masks.config.pixel_scale
    soft = cascade.masks(shapes_per_volume, mask_steps, generator=generator).soft
    masks_2d = [to_image_scale(s, factor) for s in soft]
    lifted = lift_masks(cascade.multiview, masks_2d, spacing, num_inference_steps=multiview_steps,
                        generator=generator, fit_steps=fit_steps, device=device)
    population = place_cells_3d(
        lifted.masks, shape, spacing=spacing, n_cells=cells, density=density, clustering=clustering,
        scale_range=scale_range, overlap_tolerance=overlap_tolerance, rng=np.random.default_rng(volume_seed),
    )
    for cell in population.cells:
        cell["shape"] = lifted.source[cell["source"]]
    texture = texture_volume(cascade.texture, population.labels, spacing, texture_steps,
                             generator=torch.Generator().manual_seed(volume_seed + 1))
    image = finish_volume(texture, cascade.imaging, spacing, np.random.default_rng(volume_seed + 2),
                          axial_ratio=axial_psf)
    return GeneratedSample(image=image, labels=population.labels, cells=population.cells, seed=volume_seed)
