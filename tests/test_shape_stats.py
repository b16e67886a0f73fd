"""Known answers for cell shape statistics and shape distances."""

import math

import numpy as np
import pytest

from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.shape_stats import SHAPE_STATISTICS, shape_distance, shape_statistics, summarize


def ellipse(shape, centre, semi_axes):
    yy, xx = np.indices(shape)
    return ((yy - centre[0]) / semi_axes[0]) ** 2 + ((xx - centre[1]) / semi_axes[1]) ** 2 <= 1


def test_discs_are_round_and_convex():
    discs = [ellipse((61, 61), (30, 30), (r, r)) for r in (8, 12, 16, 20, 25)]
    stats = shape_statistics(discs)
    assert set(stats) == set(SHAPE_STATISTICS)
    assert stats["area"].tolist() == [float(d.sum()) for d in discs]
    assert np.all(stats["eccentricity"] < 0.05)
    # 4π for a continuous disc; regionprops' perimeter runs a few percent long on digital circles
    assert np.all(stats["perimeter2_over_area"] > 4 * math.pi)
    assert np.all(stats["perimeter2_over_area"] < 4 * math.pi * 1.12)
    assert np.all(stats["solidity"] > 0.9)


def test_ellipse_eccentricity_and_elongation():
    stats = shape_statistics(ellipse((61, 81), (30, 40), (10, 30)))
    assert stats["eccentricity"][0] == pytest.approx(math.sqrt(1 - (10 / 30) ** 2), abs=0.01)
    disc = shape_statistics(ellipse((61, 61), (30, 30), (17, 17)))
    assert stats["perimeter2_over_area"][0] > disc["perimeter2_over_area"][0] * 1.2


def test_label_image_equals_list_of_masks_and_border_exclusion():
    labels = np.zeros((60, 60), np.int32)
    labels[ellipse((60, 60), (15, 15), (8, 8))] = 4
    labels[ellipse((60, 60), (40, 40), (6, 12))] = 9
    labels[0:10, 50:60] = 2  # touches the border
    from_labels = shape_statistics(labels)
    from_masks = shape_statistics([labels == 2, labels == 4, labels == 9])
    for name in SHAPE_STATISTICS:
        np.testing.assert_allclose(from_labels[name], from_masks[name])
    inside = shape_statistics(labels, exclude_border=True)
    assert inside["area"].tolist() == [float((labels == 4).sum()), float((labels == 9).sum())]


def test_identical_sets_have_distance_zero():
    cells = [ellipse((61, 61), (30, 30), (a, b)) for a, b in [(8, 8), (10, 14), (12, 9), (15, 20)]]
    assert shape_distance(cells, list(cells)) == {name: 0.0 for name in SHAPE_STATISTICS}


def test_distance_is_wasserstein_over_real_std():
    real = {name: np.array([1.0, 2.0, 3.0, 6.0]) for name in SHAPE_STATISTICS}
    synthetic = {name: values + 10.0 for name, values in real.items()}  # every value shifted: W1 = 10
    synthetic["solidity"] = real["solidity"][::-1].copy()  # same distribution, other order: W1 = 0
    distances = shape_distance(real, synthetic)
    assert distances["area"] == pytest.approx(10.0 / np.std([1.0, 2.0, 3.0, 6.0]))
    assert distances["solidity"] == 0.0


def test_bigger_synthetic_cells_are_far_in_area_only():
    real = [ellipse((81, 81), (40, 40), (r, r)) for r in (8, 9, 10, 11, 12)]
    synthetic = [ellipse((81, 81), (40, 40), (r, r)) for r in (20, 21, 22, 23, 24)]
    distances = shape_distance(real, synthetic)
    assert distances["area"] > 3
    assert distances["area"] > 10 * distances["eccentricity"]


def test_constant_real_values():
    real = {name: np.array([1.0, 1.0, 1.0]) for name in SHAPE_STATISTICS}
    other = dict(real, area=np.array([1.0, 2.0]))
    distances = shape_distance(real, other)
    assert distances["eccentricity"] == 0.0 and distances["area"] == math.inf


def test_summary_and_errors():
    summary = summarize({"area": np.array([1.0, 3.0]), "solidity": np.array([])})
    assert summary["area"] == {"mean": 2.0, "std": 1.0, "median": 2.0, "n": 2}
    assert math.isnan(summary["solidity"]["mean"]) and summary["solidity"]["n"] == 0
    disc = ellipse((21, 21), (10, 10), (5, 5))
    with pytest.raises(CellcascadeError, match="at least 2"):
        shape_distance([disc], [disc, disc])
    with pytest.raises(CellcascadeError, match="2D"):
        shape_statistics(np.zeros((3, 8, 8), np.int32))
    with pytest.raises(CellcascadeError, match="dtype"):
        shape_statistics(disc.astype(np.float32))
