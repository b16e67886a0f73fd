"""Implicit-surface reconstruction (stage 3): K silhouettes of a cell with known views -> its 3D mask.

Field (:mod:`.fields`), ray sampler (:mod:`.sampler`), renderer (:mod:`.renderer`, pure functions) and fitting
(:mod:`.fit`) are kept apart; :mod:`.cameras` holds the views and renders silhouettes of voxel masks.
"""

from cellcascade.reconstruction.cameras import Views, mask_frame, render_silhouettes, ring_views
from cellcascade.reconstruction.fields import GridSDF, MLPSDF
from cellcascade.reconstruction.fit import FitConfig, FitResult, default_config, fit_sdf, reconstruct, voxelize
from cellcascade.reconstruction.hull import signed_distance, visual_hull

__all__ = [
    "FitConfig",
    "FitResult",
    "GridSDF",
    "MLPSDF",
    "Views",
    "default_config",
    "fit_sdf",
    "mask_frame",
    "reconstruct",
    "render_silhouettes",
    "ring_views",
    "signed_distance",
    "visual_hull",
    "voxelize",
]
