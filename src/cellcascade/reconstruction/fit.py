"""Fit signed-distance fields of cells to their silhouettes by NeuS volume rendering, and voxelise them.

Two modes share the loop (rays, samples, NeuS opacity, mask loss + eikonal term with weight 0.1 as in the paper):

* ``"fast"``: a dense grid (:class:`~cellcascade.reconstruction.fields.GridSDF`, two resolutions) started from the
  signed distance of the silhouettes' visual hull, with a scheduled inverse std ``s``; many cells as one batch.
* ``"neus"``: NeuS's MLP (:class:`~cellcascade.reconstruction.fields.MLPSDF`) started from a sphere, with a learnable
  ``s`` (``exp(10 v)``, v from 0.3) and NeuS's warm-up + cosine learning rate: the faithful reference.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from cellcascade.errors import CellcascadeError
from cellcascade.reconstruction.cameras import Views
from cellcascade.reconstruction.fields import GridSDF, MLPSDF
from cellcascade.reconstruction.hull import signed_distance, visual_hull
from cellcascade.reconstruction.renderer import neus_alpha, render_opacity, render_weights
from cellcascade.reconstruction.sampler import importance_samples, pixel_rays, points_at, stratified_samples

MODES = ("fast", "neus")


@dataclass(frozen=True)
class FitConfig:
    """Settings of one fit; :func:`default_config` gives each mode's.

    Attributes
    ----------
    steps : int
        Optimiser steps.
    rays_per_step, samples_per_ray : int
        Random pixels per cell and step; stratified samples per ray.
    lr : float
        Adam learning rate (frame units per step for the grid), warm-up for `warmup` of the steps, then cosine
        down to ``lr * lr_end``.
    eikonal_weight : float
        Weight of the eikonal term (the paper: 0.1).
    resolution, levels, hull_tolerance : int
        Fast mode: grid nodes per axis, resolutions summed, views a hull node may miss.
    inv_s : (float, float)
        Fast mode: inverse std s of the logistic density, geometric schedule from first to last step.
    hidden, layers, n_frequencies : int
        NeuS mode: MLP size and positional-encoding octaves.
    init_radius, init_variance : float
        NeuS mode: initial sphere radius (frame units) and initial v of the learnable ``s = exp(10 v)``.
    eikonal_points : int
        NeuS mode: uniform random points per cell and step for the eikonal term.
    importance_samples : int
        Extra samples per ray drawn where a first pass (no gradient, inverse std `importance_inv_s`) puts the
        rendering weight, as NeuS's up-sampling (one round); 0 = stratified samples only.
    """

    steps: int
    rays_per_step: int
    samples_per_ray: int
    lr: float
    warmup: float = 0.0
    lr_end: float = 0.05
    eikonal_weight: float = 0.1
    resolution: int = 48
    levels: int = 2
    hull_tolerance: int = 0
    inv_s: tuple[float, float] = (40.0, 160.0)
    hidden: int = 64
    layers: int = 4
    n_frequencies: int = 6
    init_radius: float = 0.5
    init_variance: float = 0.3
    eikonal_points: int = 1024
    importance_samples: int = 0
    importance_inv_s: float = 64.0


def default_config(mode: str) -> FitConfig:
    """The settings used when none are given: ``"fast"`` or ``"neus"``."""
    _check_mode(mode)
    if mode == "fast":
        return FitConfig(steps=50, rays_per_step=2048, samples_per_ray=64, lr=1e-3)
    return FitConfig(steps=500, rays_per_step=256, samples_per_ray=32, importance_samples=32, lr=5e-3, warmup=0.05)


@dataclass
class FitResult:
    """A fitted field and how the fit went.

    Attributes
    ----------
    field : GridSDF or MLPSDF
        B cells; pass to :func:`voxelize`.
    mode : str
    losses : ndarray float64, shape (steps,)
        Mean over cells of mask loss + weighted eikonal term, per step.
    seconds : float
        Wall time of the fit (hull included).
    config : FitConfig
    """

    field: torch.nn.Module
    mode: str
    losses: np.ndarray
    seconds: float
    config: FitConfig = field(repr=False)


def fit_sdf(
    silhouettes,
    views: Views,
    mode: str = "fast",
    steps: int | None = None,
    half_width: float | tuple[float, ...] = 1.0,
    config: FitConfig | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Fit one signed-distance field per cell to its K silhouettes (known orthographic views).

    Parameters
    ----------
    silhouettes : array float, shape (K, S, S) or (B, K, S, S)
        Values in [0, 1] (1 = cell), as :func:`~cellcascade.reconstruction.cameras.render_silhouettes` makes them.
    views : Views
        The K views.
    mode : {"fast", "neus"}
        Grid from the visual hull, or NeuS's MLP from a sphere.
    steps : int, optional
        Overrides ``config.steps``.
    half_width : float or sequence of B floats
        Physical half-width of each cell's silhouette frame (kept on the field for :func:`voxelize`).
    config : FitConfig, optional
        Default: :func:`default_config` of `mode`.
    generator : torch.Generator, optional
        Rays, samples and initial weights; None means seed 0. Same seed, same field.
    device : str or torch.device

    Returns
    -------
    FitResult

    Examples
    --------
    >>> from cellcascade.reconstruction import render_silhouettes, ring_views
    >>> zz, yy, xx = np.mgrid[:24, :24, :24]
    >>> ball = (zz - 11.5) ** 2 + (yy - 11.5) ** 2 + (xx - 11.5) ** 2 <= 64
    >>> views = ring_views(6)
    >>> sil = render_silhouettes(ball, views, size=32, half_width=10.0)
    >>> fit = fit_sdf(sil, views, half_width=10.0, steps=5)
    >>> voxelize(fit.field, (24, 24, 24)).shape
    (24, 24, 24)
    """
    _check_mode(mode)
    config = config or default_config(mode)
    if steps is not None:
        config = replace(config, steps=int(steps))
    if config.steps < 0:
        raise CellcascadeError(f"steps must be >= 0, got {config.steps}")
    sil = _check_silhouettes(silhouettes, views)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    batch, size = sil.shape[0], sil.shape[-1]
    half_width = _check_half_width(half_width, batch)

    if mode == "fast":
        inside = visual_hull(sil, views, config.resolution, config.hull_tolerance, device)
        sdf = torch.as_tensor(signed_distance(inside), device=device)
        model = GridSDF(sdf, levels=config.levels, half_width=half_width).to(device)
        log_s = None
        params = list(model.parameters())
    else:
        model = MLPSDF(batch, config.hidden, config.layers, config.n_frequencies, config.init_radius, half_width,
                       generator=_cpu_generator(generator)).to(device)
        log_s = torch.nn.Parameter(torch.full((batch, 1, 1), 10 * config.init_variance, device=device))
        params = list(model.parameters()) + [log_s]

    rays = pixel_rays(views, size, device)
    targets = torch.as_tensor(sil, device=device).reshape(batch, -1)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    losses = np.zeros(config.steps)
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config)
        if log_s is None:
            fraction = step / max(config.steps - 1, 1)
            inv_s = config.inv_s[0] * (config.inv_s[1] / config.inv_s[0]) ** fraction
        else:
            inv_s = torch.exp(log_s.clamp(max=math.log(1e6)))
        index = torch.randint(0, len(rays), (batch, config.rays_per_step), generator=generator,
                              device=generator.device).to(device)
        chosen = rays.take(index)
        points, t = stratified_samples(chosen, config.samples_per_ray, generator)
        if config.importance_samples:
            with torch.no_grad():
                coarse = model(points.reshape(batch, -1, 3)).reshape(t.shape)
                weights = render_weights(neus_alpha(coarse, config.importance_inv_s))
            fine = importance_samples(t, weights, config.importance_samples, generator)
            t, _ = torch.sort(torch.cat([t, fine], dim=-1), dim=-1)
            points = points_at(chosen, t)
        sdf = model(points.reshape(batch, -1, 3)).reshape(t.shape)
        opacity = render_opacity(sdf, inv_s).clamp(1e-4, 1 - 1e-4)
        mask_loss = F.binary_cross_entropy(opacity, torch.gather(targets, 1, index), reduction="none").mean(dim=1)
        if mode == "fast":
            eikonal = model.eikonal_loss()
        else:
            uniform = torch.rand((batch, config.eikonal_points, 3), generator=generator, device=generator.device)
            eikonal = model.eikonal_loss(2 * uniform.to(device) - 1)
        loss = (mask_loss + config.eikonal_weight * eikonal).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step] = float(loss.detach()) / batch
    return FitResult(model, mode, losses, time.perf_counter() - start, config)


def voxelize(field, shape, spacing=(1.0, 1.0, 1.0), centre=None, half_width: float | None = None,
             chunk: int = 65536) -> np.ndarray:
    """Sample fitted fields on a voxel grid: inside where the signed distance is negative.

    Parameters
    ----------
    field : GridSDF or MLPSDF
        B cells.
    shape : (Z, Y, X)
        Output array shape.
    spacing : (dz, dy, dx)
        Physical voxel size of the output (z spacing may differ from xy: the frame is physical, so the shape is kept).
    centre : array (3,) or (B, 3), optional
        Voxel index coordinates (z, y, x) of each frame centre in the output; default the middle of the array.
    half_width : float or array (B,), optional
        Physical size of one frame unit per cell; default ``field.half_width``.
    chunk : int
        Voxels per evaluation.

    Returns
    -------
    ndarray bool, shape (Z, Y, X) if B == 1 else (B, Z, Y, X)
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise CellcascadeError(f"voxelize needs a shape (Z, Y, X) of positive sizes, got {shape}")
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise CellcascadeError(f"spacing must be three positive numbers (dz, dy, dx), got {spacing.tolist()}")
    parameter = next(field.parameters())
    device, batch = parameter.device, parameter.shape[0]
    if centre is None:
        centre = (np.array(shape, dtype=np.float64) - 1) / 2
    centre = np.array(np.broadcast_to(np.asarray(centre, dtype=np.float64), (batch, 3)))
    half_width = field.half_width if half_width is None else half_width
    half_width = np.array(np.broadcast_to(np.asarray(half_width, dtype=np.float64), (batch,)))
    # physical offsets of the voxel centres from each cell's centre, in frame units: (B, Z*Y*X, 3)
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    index = torch.as_tensor(index.reshape(-1, 3), dtype=torch.float32, device=device)
    offset = torch.as_tensor(centre, dtype=torch.float32, device=device)[:, None, :]
    scale = torch.as_tensor(spacing[None, :] / half_width[:, None], dtype=torch.float32, device=device)[:, None, :]
    out = torch.empty((batch, index.shape[0]), dtype=torch.bool, device=device)
    with torch.no_grad():
        for begin in range(0, index.shape[0], chunk):
            points = (index[None, begin : begin + chunk] - offset) * scale
            out[:, begin : begin + chunk] = field(points) < 0
    volume = out.reshape(batch, *shape).cpu().numpy()
    return volume[0] if batch == 1 else volume


def reconstruct(silhouettes, views: Views, shape, spacing=(1.0, 1.0, 1.0), half_width: float = 1.0,
                mode: str = "fast", generator: torch.Generator | None = None,
                device: str | torch.device = "cpu", **kwargs) -> np.ndarray:
    """Silhouettes to 3D masks in one call: :func:`fit_sdf` then :func:`voxelize` (centred in `shape`).

    Returns
    -------
    ndarray bool, shape (Z, Y, X) for (K, S, S) silhouettes, (B, Z, Y, X) for (B, K, S, S)
    """
    single = np.ndim(silhouettes) == 3
    fit = fit_sdf(silhouettes, views, mode=mode, half_width=half_width, generator=generator, device=device, **kwargs)
    volume = voxelize(fit.field, shape, spacing)
    return volume if (single or volume.ndim == 4) else volume[None]


def _lr_factor(step: int, config: FitConfig) -> float:
    warmup = int(config.warmup * config.steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(config.steps - warmup, 1)
    return config.lr_end + (1 - config.lr_end) * 0.5 * (1 + math.cos(math.pi * progress))


def _cpu_generator(generator: torch.Generator) -> torch.Generator:
    """Weights are initialised on the CPU (then moved), from a generator seeded by `generator`."""
    if generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


def _check_half_width(half_width, batch: int):
    values = np.atleast_1d(np.asarray(half_width, dtype=np.float64))
    if values.ndim != 1 or len(values) not in (1, batch) or not np.all(values > 0) or not np.all(np.isfinite(values)):
        raise CellcascadeError(f"half_width must be one positive number or one per cell ({batch}), got {half_width}")
    return float(values[0]) if np.ndim(half_width) == 0 else tuple(float(v) for v in np.broadcast_to(values, batch))


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise CellcascadeError(f"unknown reconstruction mode {mode!r}: choose one of {', '.join(MODES)}")


def _check_silhouettes(silhouettes, views: Views) -> np.ndarray:
    if not isinstance(views, Views):
        raise CellcascadeError("views must be a cellcascade.reconstruction.Views")
    sil = np.asarray(silhouettes, dtype=np.float32)
    if sil.ndim == 3:
        sil = sil[None]
    if sil.ndim != 4 or sil.shape[-1] != sil.shape[-2] or sil.shape[-1] < 2:
        raise CellcascadeError(
            f"silhouettes must be square images of shape (K, S, S) or (B, K, S, S), got {np.shape(silhouettes)}"
        )
    if sil.shape[1] != len(views):
        raise CellcascadeError(f"{sil.shape[1]} silhouettes per cell but {len(views)} views: give one per view")
    if not np.all(np.isfinite(sil)) or sil.min() < 0 or sil.max() > 1:
        raise CellcascadeError("silhouette values must be finite and within [0, 1]")
    empty = np.argwhere(~(sil > 0.5).any(axis=(2, 3)))
    if len(empty):
        b, k = empty[0]
        raise CellcascadeError(f"silhouette {k} of cell {b} is empty: every view must show the cell")
    return sil
