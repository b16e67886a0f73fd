"""Orthographic rays of every silhouette pixel and sample points along them, inside the cube [-1, 1]^3.

Coordinates are the normalised frame of :mod:`cellcascade.reconstruction.cameras`, vectors in (z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cellcascade.reconstruction.cameras import Views


@dataclass
class Rays:
    """Parallel rays, one per silhouette pixel, flattened in (view, row, column) order.

    Attributes
    ----------
    origins : Tensor float32, shape (K * S * S, 3)
        Point of each ray in the image plane through the frame centre (z, y, x).
    directions : Tensor float32, shape (K * S * S, 3)
        Unit direction of travel (away from the camera).
    near, far : Tensor float32, shape (K * S * S,)
        Ray parameters where it enters and leaves the cube; ``near == far`` for a ray that misses it.
    """

    origins: torch.Tensor
    directions: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor

    def __len__(self) -> int:
        return len(self.origins)

    def take(self, index: torch.Tensor) -> "Rays":
        """The rays at integer `index` (any shape ``I``): fields of shape ``I + (3,)`` / ``I``."""
        return Rays(self.origins[index], self.directions[index], self.near[index], self.far[index])


def pixel_rays(views: Views, size: int, device: str | torch.device = "cpu") -> Rays:
    """One ray per pixel of K silhouettes of side `size` (pixel centres as in the cameras module)."""
    right, down, d = (torch.as_tensor(v, dtype=torch.float32, device=device) for v in views.basis())
    coords = (2 * torch.arange(size, dtype=torch.float32, device=device) + 1) / size - 1
    origins = coords[None, None, :, None] * right[:, None, None] + coords[None, :, None, None] * down[:, None, None]
    directions = (-d)[:, None, None, :].expand_as(origins)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3).contiguous()
    near, far = cube_intersection(origins, directions)
    return Rays(origins, directions, near, far)


def cube_intersection(origins: torch.Tensor, directions: torch.Tensor, bound: float = 1.0):
    """Entry and exit parameters of rays in the cube [-bound, bound]^3 (slab method).

    Parameters
    ----------
    origins, directions : Tensor float, shape (..., 3)
        Rays ``origin + t * direction``.

    Returns
    -------
    near, far : Tensor float, shape (...)
        ``near < far`` for rays through the cube; both 0 for rays that miss it.
    """
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    return torch.where(hit, near, torch.zeros_like(near)), torch.where(hit, far, torch.zeros_like(far))


def stratified_samples(rays: Rays, n_samples: int, generator: torch.Generator | None = None):
    """Points along rays: one per equal section of [near, far], at a random place in it (or its middle).

    Parameters
    ----------
    rays : Rays
        Fields of any leading shape ``I``.
    n_samples : int
        Samples per ray, N.
    generator : torch.Generator, optional
        Random offsets within sections; None gives section midpoints (deterministic, for evaluation).

    Returns
    -------
    points : Tensor float32, shape I + (N, 3)
    t : Tensor float32, shape I + (N,)
        Increasing ray parameters.
    """
    lead = rays.near.shape
    device = rays.near.device
    if generator is None:
        jitter = torch.full((*lead, n_samples), 0.5, device=device)
    else:
        jitter = torch.rand((*lead, n_samples), generator=generator, device=generator.device).to(device)
    steps = (torch.arange(n_samples, device=device, dtype=torch.float32) + jitter) / n_samples
    t = rays.near[..., None] + (rays.far - rays.near)[..., None] * steps
    return points_at(rays, t), t


def points_at(rays: Rays, t: torch.Tensor) -> torch.Tensor:
    """Points at ray parameters `t` (I + (N,)): Tensor I + (N, 3)."""
    return rays.origins[..., None, :] + t[..., None] * rays.directions[..., None, :]


def importance_samples(t: torch.Tensor, weights: torch.Tensor, n_samples: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """More ray parameters where the rendering weights are large (inverse-CDF sampling, as NeuS's up-sampling).

    Parameters
    ----------
    t : Tensor float, shape (..., N)
        Increasing sample parameters; section i is [t_i, t_{i+1}].
    weights : Tensor float, shape (..., N - 1)
        Non-negative weight of each section (e.g. :func:`~cellcascade.reconstruction.renderer.render_weights`).
    n_samples : int
        New parameters per ray, M.
    generator : torch.Generator, optional
        Random positions on the CDF; None takes evenly spaced ones.

    Returns
    -------
    Tensor float, shape (..., M)
        New parameters (unsorted with respect to `t`; merge and sort before rendering).
    """
    weights = weights.detach() + 1e-5  # rays with no weight fall back to uniform
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # (..., N)
    if generator is None:
        u = ((torch.arange(n_samples, device=t.device, dtype=t.dtype) + 0.5) / n_samples).expand(*t.shape[:-1], -1)
    else:
        u = torch.rand((*t.shape[:-1], n_samples), generator=generator, device=generator.device).to(t.device)
    u = u.contiguous()
    above = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, t.shape[-1] - 1)
    below = above - 1
    cdf_lo, cdf_hi = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
    t_lo, t_hi = torch.gather(t, -1, below), torch.gather(t, -1, above)
    fraction = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp(min=1e-8)).clamp(0, 1)
    return (t_lo + fraction * (t_hi - t_lo)).detach()
