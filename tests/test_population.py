"""Population synthesis: shape poses, FFT overlap counts, placement rules, clustering, determinism, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from scipy import signal
from scipy.spatial import cKDTree
from scipy.stats import mannwhitneyu

from cellcascade.errors import CellcascadeError
from cellcascade.population import Occupancy, Population, place_cells, transform_shape


def ellipse(a: float, b: float) -> np.ndarray:
    """Bool ellipse with semi-axes a (rows) and b (columns), cropped to its box."""
    yy, xx = np.mgrid[-int(a) - 1 : int(a) + 2, -int(b) - 1 : int(b) + 2]
    mask = (yy / a) ** 2 + (xx / b) ** 2 <= 1
    return mask[ndi.find_objects(mask.astype(np.uint8))[0]]


# An asymmetric "L" so rotations and mirrors are all different.
L_SHAPE = np.zeros((4, 6), bool)
L_SHAPE[:, 0] = True
L_SHAPE[3, :] = True
SHAPES = [ellipse(4, 6), ellipse(5, 3), L_SHAPE]


def cell_mask(population: Population, cell_id: int) -> np.ndarray:
    """The cell's pixels cropped to their bounding box."""
    mask = population.labels == cell_id
    return mask[ndi.find_objects(mask.astype(np.uint8))[0]]


def footprint_of(cell: dict, shapes) -> np.ndarray:
    return transform_shape(shapes[cell["source"]], cell["rotation"], cell["flipped"], cell["scale"])


def check_labels_and_table(population: Population) -> None:
    labels, cells = population.labels, population.cells
    assert labels.dtype == np.uint16
    ids = np.unique(labels[labels > 0])
    assert list(ids) == list(range(1, len(cells) + 1))
    assert [c["id"] for c in cells] == list(range(1, len(cells) + 1))
    centroids = ndi.center_of_mass(labels > 0, labels, ids) if len(ids) else []
    for cell, centroid in zip(cells, centroids):
        np.testing.assert_allclose(cell["centroid"], centroid, atol=1e-9)


# ---------------------------------------------------------------- poses


def test_transform_shape_known_poses():
    assert np.array_equal(transform_shape(L_SHAPE), L_SHAPE)
    for k in range(4):
        assert np.array_equal(transform_shape(L_SHAPE, rotation=90 * k), np.rot90(L_SHAPE, k))
    assert np.array_equal(transform_shape(L_SHAPE, flipped=True), np.fliplr(L_SHAPE))
    # Mirror first, then rotate.
    assert np.array_equal(transform_shape(L_SHAPE, 90, flipped=True), np.rot90(np.fliplr(L_SHAPE)))
    assert transform_shape(np.ones((3, 5), bool), scale=2.0).shape == (6, 10)


@pytest.mark.parametrize("angle", [17.0, 45.0, 133.0, 301.5])
@pytest.mark.parametrize("scale", [0.5, 1.0, 1.7])
def test_transform_shape_any_angle_is_connected_and_keeps_area(angle, scale):
    shape = ellipse(6, 11)
    out = transform_shape(shape, angle, True, scale)
    assert out.dtype == bool
    assert ndi.label(out)[1] == 1
    assert out[0].any() and out[-1].any() and out[:, 0].any() and out[:, -1].any()  # cropped to its box
    assert abs(out.sum() / (shape.sum() * scale**2) - 1) < 0.12


def test_transform_shape_tiny_scale_keeps_one_pixel():
    assert transform_shape(ellipse(2, 2), 30, scale=0.05).sum() == 1


# ---------------------------------------------------------------- FFT overlap counts


@pytest.mark.parametrize("canvas", [(40, 33), (7, 12, 15)])
def test_occupancy_overlap_matches_direct_correlation(canvas):
    rng = np.random.default_rng(3)
    occupancy = Occupancy(canvas)
    for _ in range(6):  # disjoint random blobs
        blob = rng.random((3,) * len(canvas)) < 0.7
        offset = tuple(int(rng.integers(0, n - 3)) for n in canvas)
        box = tuple(slice(o, o + 3) for o in offset)
        occupancy.add(blob & ~occupancy.mask[box], offset)
    footprint = rng.random((4,) * len(canvas)) < 0.6
    positions = tuple(n - 3 for n in canvas)
    counts = occupancy.overlap(occupancy.spectrum(footprint), positions)
    direct = signal.correlate(occupancy.mask.astype(float), footprint.astype(float), mode="valid", method="direct")
    assert counts.shape == direct.shape
    np.testing.assert_allclose(counts, direct, atol=1e-3)
    assert occupancy.count == 6


# ---------------------------------------------------------------- placement


def test_place_cells_labels_and_table():
    population = place_cells(SHAPES, (96, 128), n_cells=(10, 14), rng=1)
    assert isinstance(population, Population)
    assert population.labels.shape == (96, 128)
    assert 10 <= population.requested <= 14
    assert len(population.cells) == population.requested  # sparse canvas: every cell fits
    check_labels_and_table(population)
    for cell in population.cells:
        assert set(cell) == {"id", "centroid", "source", "rotation", "flipped", "scale", "clustered"}
        assert 0 <= cell["source"] < len(SHAPES) and 0 <= cell["rotation"] < 360 and cell["scale"] == 1.0
        # No tolerance: each cell is exactly its posed footprint.
        assert np.array_equal(cell_mask(population, cell["id"]), footprint_of(cell, SHAPES))


def test_place_cells_without_rotation_or_flip_pastes_the_shapes_as_they_are():
    population = place_cells([L_SHAPE], (40, 40), n_cells=5, rotate=False, flip=False, rng=0)
    assert len(population.cells) == 5
    for cell in population.cells:
        assert cell["rotation"] == 0.0 and cell["flipped"] is False
        assert np.array_equal(cell_mask(population, cell["id"]), L_SHAPE)


def test_place_cells_scale_range():
    population = place_cells([ellipse(5, 5)], (128, 128), n_cells=12, scale_range=(1.5, 2.0), rng=2)
    scales = [c["scale"] for c in population.cells]
    assert min(scales) >= 1.5 and max(scales) <= 2.0 and len(set(scales)) == 12
    for cell in population.cells:
        assert abs(cell_mask(population, cell["id"]).sum() / (ellipse(5, 5).sum() * cell["scale"] ** 2) - 1) < 0.15


def test_density_sets_the_number_of_cells():
    population = place_cells(SHAPES, (100, 200), density=4.0, rng=0)  # 4 per 10^4 px on 2*10^4 px
    assert population.requested == 8 and len(population.cells) == 8
    assert place_cells(SHAPES, (50, 50), n_cells=0, rng=0).labels.max() == 0


def test_full_canvas_skips_cells_and_stops():
    square = np.ones((15, 15), bool)
    population = place_cells([square], (20, 20), n_cells=5, rotate=False, flip=False, rng=0)
    assert population.requested == 5 and len(population.cells) == 1
    check_labels_and_table(population)
    too_big = place_cells([np.ones((30, 5), bool)], (20, 20), n_cells=3, rotate=False, rng=0)
    assert too_big.cells == [] and too_big.labels.max() == 0


def test_overlap_tolerance_is_used_but_never_exceeded():
    tolerance = 0.3
    population = place_cells([ellipse(6, 6)], (48, 48), n_cells=30, overlap_tolerance=tolerance, rng=4)
    check_labels_and_table(population)
    kept = [cell_mask(population, c["id"]).sum() / footprint_of(c, [ellipse(6, 6)]).sum() for c in population.cells]
    assert min(kept) >= 1 - tolerance
    assert min(kept) < 1  # some cells do overlap (the canvas is crowded)
    assert all(ndi.label(population.labels == c["id"])[1] == 1 for c in population.cells)
    # The same crowded request without tolerance places fewer cells.
    assert len(place_cells([ellipse(6, 6)], (48, 48), n_cells=30, rng=4).cells) < len(population.cells)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    side=st.integers(24, 56),
    n=st.integers(0, 25),
    clustering=st.floats(0, 1),
    tolerance=st.sampled_from([0.0, 0.1, 0.4]),
    scale=st.floats(0.6, 1.4),
)
def test_property_no_overlap_beyond_tolerance(seed, side, n, clustering, tolerance, scale):
    population = place_cells(
        SHAPES,
        (side, side + 5),
        n_cells=n,
        clustering=clustering,
        scale_range=(scale, scale + 0.2),
        overlap_tolerance=tolerance,
        rng=seed,
    )
    check_labels_and_table(population)
    assert len(population.cells) <= n
    for cell in population.cells:
        area = footprint_of(cell, SHAPES).sum()
        mask = population.labels == cell["id"]
        assert area - np.floor(tolerance * area) <= np.count_nonzero(mask) <= area
        assert ndi.label(mask)[1] == 1


def mean_nn_distance(population: Population) -> float:
    centroids = np.array([c["centroid"] for c in population.cells])
    distances, _ = cKDTree(centroids).query(centroids, k=2)
    return float(distances[:, 1].mean())


def test_clustering_brings_cells_closer():
    shapes = [ellipse(5, 7), ellipse(6, 4)]
    scattered, clustered = [], []
    for seed in range(8):
        p0 = place_cells(shapes, (256, 256), n_cells=25, clustering=0.0, rng=seed)
        p1 = place_cells(shapes, (256, 256), n_cells=25, clustering=1.0, rng=seed)
        assert len(p0.cells) == len(p1.cells) == 25
        assert not any(c["clustered"] for c in p0.cells)
        assert all(c["clustered"] for c in p1.cells[1:]) and not p1.cells[0]["clustered"]
        scattered.append(mean_nn_distance(p0))
        clustered.append(mean_nn_distance(p1))
    assert mannwhitneyu(clustered, scattered, alternative="less").pvalue < 0.01
    assert max(clustered) < 20 < min(scattered)  # colonies: neighbours about one cell apart


def test_clustered_cells_touch_their_colony():
    population = place_cells([ellipse(4, 4)], (128, 128), n_cells=15, clustering=1.0, cluster_gap=1, rng=5)
    labels = population.labels
    for cell in population.cells[1:]:
        mask = labels == cell["id"]
        ring = ndi.binary_dilation(mask, np.ones((5, 5), bool)) & ~mask  # within 2 px
        earlier = labels[ring]
        assert np.any((earlier > 0) & (earlier < cell["id"]))


def test_same_seed_same_population_different_seed_differs():
    kwargs = dict(n_cells=(8, 12), clustering=0.5, scale_range=(0.8, 1.2))
    a = place_cells(SHAPES, (64, 64), rng=7, **kwargs)
    b = place_cells(SHAPES, (64, 64), rng=np.random.default_rng(7), **kwargs)
    c = place_cells(SHAPES, (64, 64), rng=8, **kwargs)
    assert np.array_equal(a.labels, b.labels) and a.cells == b.cells
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(clustering=1.5), "clustering"),
        (dict(clustering=-0.1), "clustering"),
        (dict(canvas_shape=(0, 32)), "canvas_shape"),
        (dict(canvas_shape=(-5, 32)), "canvas_shape"),
        (dict(canvas_shape=(32, 32, 32)), "2D"),
        (dict(shapes=[]), "empty"),
        (dict(shapes=[np.ones((5, 5), np.uint8)]), "bool"),
        (dict(shapes=[np.ones((2, 5, 5), bool)]), "2D"),
        (dict(shapes=[np.zeros((5, 5), bool)]), "empty"),
        (dict(n_cells=(5, 3)), "n_cells"),
        (dict(n_cells=(-1, 3)), "n_cells"),
        (dict(n_cells=-2), "n_cells"),
        (dict(n_cells="many"), "n_cells"),
        (dict(density=-1.0), "density"),
        (dict(scale_range=(0.0, 1.0)), "scale_range"),
        (dict(scale_range=(-1.0, 1.0)), "scale_range"),
        (dict(scale_range=(1.2, 1.0)), "scale_range"),
        (dict(overlap_tolerance=1.0), "overlap_tolerance"),
        (dict(overlap_tolerance=-0.1), "overlap_tolerance"),
        (dict(max_attempts=0), "max_attempts"),
        (dict(cluster_gap=0), "cluster_gap"),
        (dict(rng="seed"), "rng"),
    ],
)
def test_bad_input_raises_one_line_error(kwargs, match):
    arguments = dict(shapes=SHAPES, canvas_shape=(32, 32))
    arguments.update(kwargs)
    shapes, canvas = arguments.pop("shapes"), arguments.pop("canvas_shape")
    with pytest.raises(CellcascadeError, match=match) as info:
        place_cells(shapes, canvas, **arguments)
    assert "\n" not in str(info.value)
