"""3D cell shapes: a built-in prior of plausible 3D cells that follow 2D masks, baselines, measurements."""

from cellcascade.shapes3d.baselines import ellipsoid, ellipsoid_of_revolution, extrude, median_height
from cellcascade.shapes3d.measure import Ellipse, axial_ratio, centred_iou, fit_ellipse, volume, xy_diameter, z_extent
from cellcascade.shapes3d.prior import CellShape3D, draw_shape, equator_from_mask, sample_shapes

__all__ = [
    "CellShape3D",
    "Ellipse",
    "axial_ratio",
    "centred_iou",
    "draw_shape",
    "ellipsoid",
    "ellipsoid_of_revolution",
    "equator_from_mask",
    "extrude",
    "fit_ellipse",
    "median_height",
    "sample_shapes",
    "volume",
    "xy_diameter",
    "z_extent",
]
