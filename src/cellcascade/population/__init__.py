"""Population synthesis (stage 4): place single-cell shapes into a canvas as instance labels."""

from cellcascade.population.occupancy import Occupancy
from cellcascade.population.placement import Population, place_cells
from cellcascade.population.transform import apply_linear, pose_matrix_2d, transform_shape

__all__ = ["Occupancy", "Population", "apply_linear", "place_cells", "pose_matrix_2d", "transform_shape"]
