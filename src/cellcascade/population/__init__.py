"""Population synthesis (stage 4): place single-cell shapes into a canvas (2D) or a volume (3D) as instance labels."""

from cellcascade.population.occupancy import Occupancy
from cellcascade.population.placement import Population, place_cells
from cellcascade.population.placement3d import place_cells_3d
from cellcascade.population.transform import (
    apply_linear,
    pose_matrix_2d,
    pose_matrix_3d,
    random_rotation,
    rotation_about_z,
    transform_shape,
    transform_shape_3d,
)

__all__ = [
    "Occupancy",
    "Population",
    "apply_linear",
    "place_cells",
    "place_cells_3d",
    "pose_matrix_2d",
    "pose_matrix_3d",
    "random_rotation",
    "rotation_about_z",
    "transform_shape",
    "transform_shape_3d",
]
