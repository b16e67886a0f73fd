"""NeuS volume rendering of signed distances along rays, reduced to a silhouette value (pure functions).

NeuS (Wang et al. 2021): the opacity of the section between samples i and i+1 is
``alpha_i = max((Phi_s(f_i) - Phi_s(f_{i+1})) / Phi_s(f_i), 0)`` with ``Phi_s(x) = sigmoid(s * x)``, the logistic
CDF of inverse standard deviation ``s``; the pixel's opacity is ``1 - prod_i (1 - alpha_i)``.
"""

from __future__ import annotations

import torch


def neus_alpha(sdf: torch.Tensor, inv_s: torch.Tensor | float) -> torch.Tensor:
    """Section opacities from signed distances at consecutive samples along rays.

    Parameters
    ----------
    sdf : Tensor float, shape (..., N)
        Signed distance (negative inside) at N increasing samples of each ray.
    inv_s : Tensor or float
        Inverse standard deviation s of the logistic density, broadcastable to ``(..., 1)``.

    Returns
    -------
    Tensor float, shape (..., N - 1)
        alpha in [0, 1].

    Examples
    --------
    >>> a = neus_alpha(torch.tensor([1.0, -1.0]), 50.0)
    >>> round(float(a), 3)
    1.0
    """
    cdf = torch.sigmoid(sdf * inv_s)
    prev, nxt = cdf[..., :-1], cdf[..., 1:]
    return ((prev - nxt) / (prev + 1e-6)).clamp(0.0, 1.0)


def render_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Volume-rendering weights ``T_i * alpha_i`` (T_i: transmittance before section i); same shape as `alpha`."""
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], dim=-1), dim=-1)
    return transmittance * alpha


def accumulate_opacity(alpha: torch.Tensor) -> torch.Tensor:
    """Silhouette value of each ray, ``1 - prod(1 - alpha)``: (..., N - 1) -> (...)."""
    return 1 - torch.prod(1 - alpha, dim=-1)


def render_opacity(sdf: torch.Tensor, inv_s: torch.Tensor | float) -> torch.Tensor:
    """Silhouette value (opacity in [0, 1]) of rays from signed distances at their samples: (..., N) -> (...)."""
    return accumulate_opacity(neus_alpha(sdf, inv_s))
