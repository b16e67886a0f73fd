"""3D population synthesis: count, no overlap beyond tolerance, clustering, anisotropic poses, determinism, errors."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from scipy.stats import mannwhitneyu

from cellcascade.errors import CellcascadeError
from cellcascade.population import Population, place_cells, place_cells_3d, transform_shape_3d

SPACING = (2.0, 0.5, 0.5)  # µm: z voxels four times the xy pixels


def nucleus(radii_um, spacing=SPACING) -> np.ndarray:
    """Bool (z, y, x) ellipsoid with physical semi-axes (rz, ry, rx), in voxels of `spacing`, cropped."""
    half = [int(r / s) + 1 for r, s in zip(radii_um, spacing)]
    z, y, x = np.mgrid[tuple(slice(-h, h + 1) for h in half)]
    mask = sum((c * s / r) ** 2 for c, s, r in zip((z, y, x), spacing, radii_um)) <= 1
    return mask[ndi.find_objects(mask.astype(np.uint8))[0]]


# An asymmetric 3D "L" (two slices of an L) so that poses differ.
L_SHAPE = np.zeros((2, 8, 12), bool)
L_SHAPE[:, :, :3] = True
L_SHAPE[:, 5:, :] = True
SHAPES = [nucleus((4.0, 3.0, 4.5)), nucleus((3.0, 3.5, 2.5)), L_SHAPE]


def cell_mask(population: Population, cell_id: int) -> np.ndarray:
    mask = population.labels == cell_id
    return mask[ndi.find_objects(mask.astype(np.uint8))[0]]


def footprint_of(cell: dict, shapes, spacing=SPACING) -> np.ndarray:
    return transform_shape_3d(shapes[cell["source"]], np.array(cell["rotation"]), cell["flipped"], cell["scale"],
                              spacing)


def check_labels_and_table(population: Population) -> None:
    labels, cells = population.labels, population.cells
    assert labels.dtype == np.uint16 and labels.ndim == 3
    ids = np.unique(labels[labels > 0])
    assert list(ids) == list(range(1, len(cells) + 1)) == [c["id"] for c in cells]
    centroids = ndi.center_of_mass(labels > 0, labels, ids) if len(ids) else []
    for cell, centroid in zip(cells, centroids):
        np.testing.assert_allclose(cell["centroid"], centroid, atol=1e-9)


def test_places_the_requested_count_and_each_cell_is_its_posed_footprint():
    population = place_cells_3d(SHAPES, (16, 80, 96), spacing=SPACING, n_cells=(10, 14), rng=1)
    assert population.labels.shape == (16, 80, 96)
    assert 10 <= population.requested <= 14 and len(population.cells) == population.requested
    check_labels_and_table(population)
    for cell in population.cells:
        assert set(cell) == {"id", "centroid", "source", "rotation", "flipped", "scale", "clustered"}
        rotation = np.array(cell["rotation"])
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert rotation[0, 0] == pytest.approx(1.0)  # default: about z only
        assert np.array_equal(cell_mask(population, cell["id"]), footprint_of(cell, SHAPES))


def test_rotation_about_z_keeps_the_height_in_anisotropic_voxels():
    shape = nucleus((4.5, 3.0, 6.0))  # 5 slices, none of them a lone voxel (bilinear resampling would drop it)
    population = place_cells_3d([shape], (16, 96, 96), spacing=SPACING, n_cells=8, rng=2)
    assert len(population.cells) == 8
    for cell in population.cells:
        mask = cell_mask(population, cell["id"])
        assert mask.shape[0] == shape.shape[0] == 5
        assert abs(mask.sum() / shape.sum() - 1) < 0.1  # physical rotation: the volume is kept


def test_poses_act_on_physical_offsets():
    # 2 µm along y and 6 µm along x in voxels of 0.5 µm (y) x 1 µm (x): turned by 90°, 6 µm along y = 12 voxels.
    box = np.ones((1, 4, 6), bool)
    assert transform_shape_3d(box, 90.0, spacing=(1.0, 0.5, 1.0)).shape == (1, 12, 2)
    # A physical ball in anisotropic voxels stays a ball under any rotation (ignoring the spacing would turn the
    # 5 x 25 x 25-voxel ball into a tall ellipsoid).
    ball = nucleus((6.0, 6.0, 6.0))
    population = place_cells_3d([ball], (24, 64, 64), spacing=SPACING, n_cells=6, rotate="any", rng=1)
    assert len(population.cells) == 6
    for cell in population.cells:
        mask = cell_mask(population, cell["id"])
        assert abs(mask.shape[0] - ball.shape[0]) <= 1 and abs(mask.shape[1] - ball.shape[1]) <= 2
        assert abs(mask.sum() / ball.sum() - 1) < 0.1


def test_rotate_none_pastes_shapes_and_any_tilts_them():
    still = place_cells_3d([L_SHAPE], (6, 48, 48), spacing=SPACING, n_cells=4, rotate="none", flip=False, rng=0)
    assert all(np.array_equal(cell_mask(still, c["id"]), L_SHAPE) for c in still.cells)
    rod = nucleus((3.0, 1.0, 1.0), spacing=(0.5, 0.5, 0.5))  # long along z; isotropic voxels
    tilted = place_cells_3d([rod], (24, 48, 48), spacing=(0.5, 0.5, 0.5), n_cells=6, rotate="any", rng=0)
    check_labels_and_table(tilted)
    assert len(tilted.cells) == 6
    assert all(np.array_equal(cell_mask(tilted, c["id"]), footprint_of(c, [rod], (0.5, 0.5, 0.5)))
               for c in tilted.cells)
    heights = [cell_mask(tilted, c["id"]).shape[0] for c in tilted.cells]
    assert min(heights) < rod.shape[0]  # some rods lean over


def test_density_counts_cells_per_physical_volume():
    # 8 x 64 x 64 voxels of 2 x 0.5 x 0.5 µm = 16384 µm³; 610.4 cells per 10^6 µm³ -> 10 cells
    population = place_cells_3d(SHAPES[:2], (8, 64, 64), spacing=SPACING, density=610.4, rng=0)
    assert population.requested == 10
    assert place_cells_3d(SHAPES, (8, 32, 32), spacing=SPACING, n_cells=0, rng=0).labels.max() == 0


def test_full_volume_skips_cells_and_stops():
    block = np.ones((4, 20, 20), bool)
    population = place_cells_3d([block], (5, 30, 30), n_cells=4, rotate="none", rng=0)
    assert population.requested == 4 and len(population.cells) == 1
    too_tall = place_cells_3d([np.ones((8, 3, 3), bool)], (5, 30, 30), n_cells=2, rng=0)
    assert too_tall.cells == [] and too_tall.labels.max() == 0


@pytest.mark.parametrize("tolerance", [0.0, 0.3])
def test_no_overlap_beyond_tolerance(tolerance):
    shape = nucleus((3.0, 3.0, 3.0))
    population = place_cells_3d([shape], (8, 40, 40), spacing=SPACING, n_cells=40, clustering=0.5,
                                overlap_tolerance=tolerance, rng=4)
    check_labels_and_table(population)
    kept = []
    for cell in population.cells:
        area = footprint_of(cell, [shape]).sum()
        mask = population.labels == cell["id"]
        assert area - np.floor(tolerance * area) <= mask.sum() <= area
        assert ndi.label(mask)[1] == 1
        kept.append(mask.sum() / area)
    if tolerance:
        assert min(kept) < 1  # the crowded volume does use the tolerance
        strict = place_cells_3d([shape], (8, 40, 40), spacing=SPACING, n_cells=40, clustering=0.5, rng=4)
        assert len(strict.cells) < len(population.cells)


def mean_nn_distance(population: Population, spacing=SPACING) -> float:
    """Mean physical distance from each cell centroid to its nearest neighbour."""
    centroids = np.array([c["centroid"] for c in population.cells]) * np.array(spacing)
    distances, _ = cKDTree(centroids).query(centroids, k=2)
    return float(distances[:, 1].mean())


def test_clustering_brings_cells_closer():
    shapes = SHAPES[:2]
    scattered, clustered = [], []
    for seed in range(6):
        p0 = place_cells_3d(shapes, (12, 96, 96), spacing=SPACING, n_cells=12, clustering=0.0, rng=seed)
        p1 = place_cells_3d(shapes, (12, 96, 96), spacing=SPACING, n_cells=12, clustering=1.0, rng=seed)
        assert len(p0.cells) == len(p1.cells) == 12
        assert not any(c["clustered"] for c in p0.cells)
        assert all(c["clustered"] for c in p1.cells[1:])
        scattered.append(mean_nn_distance(p0))
        clustered.append(mean_nn_distance(p1))
    assert mannwhitneyu(clustered, scattered, alternative="less").pvalue < 0.01
    assert max(clustered) < min(scattered)


def test_clustered_cells_touch_their_colony_within_the_physical_gap():
    population = place_cells_3d([SHAPES[1]], (12, 64, 64), spacing=SPACING, n_cells=8, clustering=1.0,
                                cluster_gap=1.0, rng=5)  # 1 µm: 1 voxel in z, 2 in y and x
    labels = population.labels
    for cell in population.cells[1:]:
        mask = labels == cell["id"]
        ring = ndi.binary_dilation(mask, np.ones((3, 5, 5), bool)) & ~mask
        earlier = labels[ring]
        assert np.any((earlier > 0) & (earlier < cell["id"]))


def test_same_seed_same_volume_different_seed_differs():
    kwargs = dict(spacing=SPACING, n_cells=(6, 9), clustering=0.5, scale_range=(0.8, 1.2), overlap_tolerance=0.1)
    a = place_cells_3d(SHAPES, (10, 48, 48), rng=7, **kwargs)
    b = place_cells_3d(SHAPES, (10, 48, 48), rng=np.random.default_rng(7), **kwargs)
    c = place_cells_3d(SHAPES, (10, 48, 48), rng=8, **kwargs)
    assert np.array_equal(a.labels, b.labels) and a.cells == b.cells
    assert not np.array_equal(a.labels, c.labels)


def test_2d_placement_points_to_3d():
    with pytest.raises(CellcascadeError, match="place_cells_3d"):
        place_cells(SHAPES, (8, 32, 32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(volume_shape=(32, 32)), "3D"),
        (dict(volume_shape=(0, 32, 32)), "volume_shape"),
        (dict(volume_shape=5), "volume_shape"),
        (dict(shapes=[np.ones((5, 5), bool)]), "3D"),
        (dict(shapes=[np.zeros((2, 5, 5), bool)]), "empty"),
        (dict(spacing=(1.0, 1.0)), "spacing"),
        (dict(spacing=(0.0, 1.0, 1.0)), "spacing"),
        (dict(rotate="sideways"), "rotate"),
        (dict(cluster_gap=0.0), "cluster_gap"),
        (dict(cluster_gap=-1), "cluster_gap"),
        (dict(density=-1.0), "density"),
        (dict(n_cells=(5, 3)), "n_cells"),
        (dict(clustering=2.0), "clustering"),
        (dict(overlap_tolerance=1.0), "overlap_tolerance"),
        (dict(scale_range=(0.0, 1.0)), "scale_range"),
        (dict(max_attempts=0), "max_attempts"),
        (dict(rng=-1), "rng"),
    ],
)
def test_bad_input_raises_one_line_error(kwargs, match):
    arguments = dict(shapes=SHAPES, volume_shape=(8, 32, 32))
    arguments.update(kwargs)
    shapes, volume = arguments.pop("shapes"), arguments.pop("volume_shape")
    with pytest.raises(CellcascadeError, match=match) as info:
        place_cells_3d(shapes, volume, **arguments)
    assert "\n" not in str(info.value)
