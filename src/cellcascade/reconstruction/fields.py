"""Signed-distance fields of B cells at once: a dense grid (fast mode) and NeuS's MLP (faithful mode).

Both map points of the normalised frame, Tensor (B, N, 3) in (z, y, x), to signed distances (B, N), negative inside,
and carry ``half_width``: the physical size of one frame unit, one float or one per cell
(see :mod:`cellcascade.reconstruction.cameras`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cellcascade.errors import CellcascadeError


class GridSDF(nn.Module):
    """Signed distances on grids over [-1, 1]^3, trilinearly interpolated; optionally a sum of resolutions.

    Level 0 has R nodes per axis, level l about ``(R - 1) / 2^l + 1``; the field is the sum of the levels,
    so coarse levels move large parts of the surface in one step and the finest keeps the detail.

    Parameters
    ----------
    sdf : Tensor float, shape (B, R, R, R)
        Initial values of level 0 at the nodes of :func:`~cellcascade.reconstruction.hull.grid_points` (z, y, x);
        coarser levels start at zero.
    levels : int
        Number of resolutions.
    half_width : float or tuple of B floats
        Physical size of one frame unit (per cell).

    Examples
    --------
    >>> from cellcascade.reconstruction.hull import grid_points
    >>> field = GridSDF(grid_points(9).norm(dim=-1)[None] - 0.5)
    >>> field(torch.zeros(1, 1, 3)).shape
    torch.Size([1, 1])
    """

    def __init__(self, sdf: torch.Tensor, levels: int = 1, half_width: float = 1.0):
        super().__init__()
        sdf = torch.as_tensor(sdf, dtype=torch.float32)
        if sdf.ndim != 4 or len(set(sdf.shape[1:])) != 1 or sdf.shape[-1] < 2:
            raise CellcascadeError(f"a grid field needs values of shape (B, R, R, R), got {tuple(sdf.shape)}")
        resolution = sdf.shape[-1]
        self.resolution = resolution
        self.half_width = half_width
        sizes = [resolution] + [max(2, round((resolution - 1) / 2**level) + 1) for level in range(1, int(levels))]
        self.grids = nn.ParameterList(
            [nn.Parameter(sdf[:, None].clone())]
            + [nn.Parameter(sdf.new_zeros((sdf.shape[0], 1, n, n, n))) for n in sizes[1:]]
        )

    @property
    def batch_size(self) -> int:
        return self.grids[0].shape[0]

    def dense(self) -> torch.Tensor:
        """The field at the finest nodes: Tensor (B, 1, R, R, R), the levels summed."""
        total = self.grids[0]
        for grid in self.grids[1:]:
            total = total + F.interpolate(grid, size=total.shape[-3:], mode="trilinear", align_corners=True)
        return total

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distances (B, N) at points (B, N, 3); outside the cube the border value is repeated."""
        grid = points.flip(-1)[:, :, None, None, :]  # grid_sample wants (x, y, z)
        values = F.grid_sample(self.dense(), grid, mode="bilinear", padding_mode="border", align_corners=True)
        return values[:, 0, :, 0, 0]

    def eikonal_loss(self, points: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of ``(|grad f| - 1)^2`` over the interior nodes (central differences), per cell: (B,).

        `points` is ignored: the grid is small enough to be checked everywhere.
        """
        total = self.dense()[:, 0]
        h = 2.0 / (self.resolution - 1)
        gz = (total[:, 2:, 1:-1, 1:-1] - total[:, :-2, 1:-1, 1:-1]) / (2 * h)
        gy = (total[:, 1:-1, 2:, 1:-1] - total[:, 1:-1, :-2, 1:-1]) / (2 * h)
        gx = (total[:, 1:-1, 1:-1, 2:] - total[:, 1:-1, 1:-1, :-2]) / (2 * h)
        norm = torch.sqrt(gz**2 + gy**2 + gx**2 + 1e-12)
        return ((norm - 1) ** 2).flatten(1).mean(dim=1)


def positional_encoding(points: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """NeuS/NeRF encoding ``[p, sin(2^k p), cos(2^k p)]`` for k < n_frequencies: (..., 3) -> (..., 3 + 6 n)."""
    features = [points]
    for k in range(int(n_frequencies)):
        features += [torch.sin(2.0**k * points), torch.cos(2.0**k * points)]
    return torch.cat(features, dim=-1)


class MLPSDF(nn.Module):
    """NeuS's SDF network for B cells at once (B independent MLPs, evaluated with batched matrix products).

    Positional encoding, ``layers`` hidden layers of width ``hidden`` with Softplus(beta=100), and the geometric
    initialisation of SAL/IDR as NeuS uses it: the field starts as a sphere of radius ``radius``.

    Parameters
    ----------
    batch_size : int
        Cells B.
    hidden, layers : int
        Width and number of hidden layers.
    n_frequencies : int
        Positional-encoding octaves (NeuS: 6).
    radius : float
        Initial sphere radius in frame units.
    half_width : float or tuple of B floats
        Physical size of one frame unit (per cell).
    generator : torch.Generator, optional
        Initial weights.

    Examples
    --------
    >>> field = MLPSDF(1, hidden=16, layers=2, generator=torch.Generator().manual_seed(0))
    >>> bool(field(torch.zeros(1, 1, 3)) < 0)  # the centre is inside
    True
    """

    def __init__(self, batch_size: int = 1, hidden: int = 64, layers: int = 4, n_frequencies: int = 6,
                 radius: float = 0.5, half_width: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        self.half_width = half_width
        self.n_frequencies = int(n_frequencies)
        dims = [3 + 6 * self.n_frequencies] + [int(hidden)] * int(layers) + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
            weight = torch.zeros((batch_size, n_in, n_out))
            bias = torch.zeros((batch_size, 1, n_out))
            if i == len(dims) - 2:  # last layer: f(p) ~ |p| - radius
                nn.init.normal_(weight, mean=math.sqrt(math.pi) / math.sqrt(n_in), std=1e-4, generator=generator)
                bias.fill_(-float(radius))
            elif i == 0:  # the encoded frequencies start switched off
                nn.init.normal_(weight[:, :3], mean=0.0, std=math.sqrt(2) / math.sqrt(n_out), generator=generator)
            else:
                nn.init.normal_(weight, mean=0.0, std=math.sqrt(2) / math.sqrt(n_out), generator=generator)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))

    @property
    def batch_size(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distances (B, N) at points (B, N, 3)."""
        x = positional_encoding(points, self.n_frequencies)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = F.softplus(x, beta=100)
        return x[..., 0]

    def eikonal_loss(self, points: torch.Tensor) -> torch.Tensor:
        """Mean of ``(|grad f| - 1)^2`` at points (B, M, 3) (autograd, differentiable), per cell: (B,)."""
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            sdf = self(points)
            (grad,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
        return ((grad.norm(dim=-1) - 1) ** 2).mean(dim=1)
