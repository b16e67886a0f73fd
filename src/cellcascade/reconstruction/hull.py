"""Visual hull of silhouettes on a grid, and its signed distance: the starting shape of the fast mode."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from cellcascade.errors import CellcascadeError
from cellcascade.reconstruction.cameras import Views


def grid_points(resolution: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """float32 (R, R, R, 3): nodes of the grid over [-1, 1]^3 (ends included), (z, y, x) order on both axes."""
    line = torch.linspace(-1.0, 1.0, int(resolution), device=device)
    return torch.stack(torch.meshgrid(line, line, line, indexing="ij"), dim=-1)


def visual_hull(silhouettes, views: Views, resolution: int = 48, tolerance: int = 0,
                device: str | torch.device = "cpu") -> np.ndarray:
    """Carve a grid: a node is inside iff it projects inside every silhouette.

    Parameters
    ----------
    silhouettes : array float, shape (B, K, S, S)
        Values in [0, 1]; a pixel counts as inside above 0.5 (bilinear between pixel centres).
    views : Views
        The K views.
    resolution : int
        Grid nodes per axis, R.
    tolerance : int
        Views a node may fall outside of and still count as inside (for silhouettes that disagree a little).

    Returns
    -------
    ndarray bool, shape (B, R, R, R)
        Inside, on the grid of :func:`grid_points` (axes z, y, x).
    """
    sil = torch.as_tensor(np.asarray(silhouettes, dtype=np.float32), device=device)
    batch, k = sil.shape[:2]
    right, down, _ = (torch.as_tensor(v, dtype=torch.float32, device=device) for v in views.basis())
    nodes = grid_points(resolution, device).reshape(-1, 3)
    votes = torch.zeros((batch, nodes.shape[0]), device=device)
    for view in range(k):
        grid = torch.stack([nodes @ right[view], nodes @ down[view]], dim=-1)  # (a, b) = (x, y) for grid_sample
        grid = grid[None, None].expand(batch, 1, -1, 2)
        values = F.grid_sample(sil[:, view : view + 1], grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        votes += (values[:, 0, 0] > 0.5).float()
    inside = votes >= k - int(tolerance)
    return inside.reshape(batch, resolution, resolution, resolution).cpu().numpy()


def signed_distance(inside: np.ndarray) -> np.ndarray:
    """Signed distance of a binary grid over [-1, 1]^3, negative inside, in frame units.

    The surface is put half-way between an inside node and its outside neighbour.

    Parameters
    ----------
    inside : ndarray bool, shape (B, R, R, R)

    Returns
    -------
    ndarray float32, shape (B, R, R, R)
    """
    inside = np.asarray(inside, dtype=bool)
    voxel = 2.0 / (inside.shape[-1] - 1)
    out = np.empty(inside.shape, np.float32)
    for b, cell in enumerate(inside):
        if not cell.any():
            raise CellcascadeError(f"the silhouettes of cell {b} do not agree: their visual hull is empty")
        if cell.all():
            raise CellcascadeError(f"the visual hull of cell {b} fills the whole frame: silhouettes cover every pixel")
        outside_distance = ndi.distance_transform_edt(~cell)
        inside_distance = ndi.distance_transform_edt(cell)
        out[b] = voxel * np.where(cell, 0.5 - inside_distance, outside_distance - 0.5)
    return out
