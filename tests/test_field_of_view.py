"""The field of view: a scene cut to the image, cells crossing the border keep their visible part."""

import numpy as np
import pytest
from skimage.draw import disk

from cellcascade.errors import CellcascadeError
from cellcascade.population.field_of_view import crop_field_of_view


def scene_with_three_cells():
    """(40, 40) scene, margin 10: cell 1 wholly in the margin, 2 across the left border, 3 inside."""
    labels = np.zeros((40, 40), np.uint16)
    labels[disk((20, 4), 3, shape=labels.shape)] = 1
    labels[disk((20, 10), 5, shape=labels.shape)] = 2
    labels[disk((20, 22), 5, shape=labels.shape)] = 3
    cells = [{"id": i, "source": 10 * i, "centroid": [0.0, 0.0]} for i in (1, 2, 3)]
    return labels, cells


def test_cells_across_the_border_keep_their_visible_part():
    labels, cells = scene_with_three_cells()
    window, table = crop_field_of_view(labels, cells, 10)
    assert window.shape == (20, 20) and window.dtype == np.uint16
    np.testing.assert_array_equal(np.unique(window), [0, 1, 2])  # cell 1 gone, ids consecutive
    assert [c["source"] for c in table] == [20, 30]  # rows follow their cells
    assert [c["id"] for c in table] == [1, 2]
    cut, inside = table
    assert cut["cut"] and not inside["cut"] and inside["visible_fraction"] == 1.0
    # the left half of the disc at x = 10 minus its centre column lies outside the window [10, 30)
    assert cut["visible_fraction"] == pytest.approx((window == 1).sum() / (labels == 2).sum())
    assert 0.5 < cut["visible_fraction"] < 0.7
    assert (window[:, 0] == 1).any()  # touches the image border
    np.testing.assert_allclose(inside["centroid"], [10.0, 12.0])  # in window coordinates
    np.testing.assert_array_equal(window == 2, labels[10:30, 10:30] == 3)


def test_small_pieces_of_cut_cells_are_dropped_but_small_whole_cells_kept():
    labels = np.zeros((30, 30), np.uint16)
    labels[10:14, 2:7] = 1  # 4 x 5 = 20 px, 4 x 2 = 8 px visible in the window [5, 25)
    labels[15:18, 15:18] = 2  # a whole 9-px cell
    window, table = crop_field_of_view(labels, [{"id": 1}, {"id": 2}], 5, min_fragment=10)
    assert len(table) == 1 and table[0]["cut"] is False
    assert (window == 1).sum() == 9 and window.max() == 1
    window, table = crop_field_of_view(labels, [{"id": 1}, {"id": 2}], 5, min_fragment=8)
    assert [c["cut"] for c in table] == [True, False] and (window == 1).sum() == 8


def test_margin_zero_keeps_the_scene():
    labels, cells = scene_with_three_cells()
    window, table = crop_field_of_view(labels, cells, 0)
    np.testing.assert_array_equal(window, labels)
    assert not any(c["cut"] for c in table)


@pytest.mark.parametrize("margin", [-1, 20, 2.5])
def test_bad_margins_are_refused(margin):
    labels, cells = scene_with_three_cells()
    with pytest.raises(CellcascadeError, match="margin"):
        crop_field_of_view(labels, cells, margin)


def test_non_label_input_is_refused():
    with pytest.raises(CellcascadeError, match="2D integer"):
        crop_field_of_view(np.zeros((10, 10), np.float32), [], 2)
