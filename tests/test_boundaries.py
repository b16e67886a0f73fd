"""Shrinking predicted cells by a share of their area: known answers, subsets, edges and bad input."""

import numpy as np
import pytest

from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.boundaries import shrink_cells


def disc(shape, centre, radius):
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_a_square_loses_its_corners_first_and_zero_is_a_copy():
    labels = np.zeros((12, 12), np.int32)
    labels[1:11, 1:11] = 3
    shrunk = shrink_cells(labels, 0.04)
    removed = np.argwhere((labels > 0) & (shrunk == 0))
    assert sorted(map(tuple, removed)) == [(1, 1), (1, 10), (10, 1), (10, 10)]
    assert set(np.unique(shrunk)) == {0, 3}
    same = shrink_cells(labels, 0.0)
    assert np.array_equal(same, labels) and same is not labels


def test_shrinking_a_grown_disc_by_its_excess_area_gives_the_disc_back():
    small, grown = disc((48, 48), (24, 24), 10), disc((48, 48), (24, 24), 11)
    fraction = 1 - small.sum() / grown.sum()
    shrunk = shrink_cells(grown.astype(np.int32), fraction) > 0
    assert shrunk.sum() == small.sum() == round((1 - fraction) * grown.sum())
    iou = (shrunk & small).sum() / (shrunk | small).sum()
    before = small.sum() / grown.sum()
    assert iou > 0.97 > before  # a ring of the grown disc is gone, not pixels anywhere


def test_every_cell_shrinks_within_itself_also_where_cells_touch():
    labels = np.zeros((20, 40), np.int32)
    labels[2:18, 2:20] = 1
    labels[2:18, 20:38] = 2  # touches cell 1 along column 19 | 20
    shrunk = shrink_cells(labels, 0.2)
    for cell in (1, 2):
        kept = shrunk == cell
        assert np.all(labels[kept] == cell)
        assert kept.sum() == round(0.8 * (labels == cell).sum())
    assert shrunk[10, 19] == 0 and shrunk[10, 20] == 0  # the shared boundary moved apart on both sides


def test_the_image_edge_is_not_a_boundary():
    labels = np.zeros((20, 40), np.int32)
    labels[0:10, 10:30] = 1  # cut by the top edge, like an annotation of a cell leaving the image
    shrunk = shrink_cells(labels, 0.05)
    removed = np.argwhere((labels > 0) & (shrunk == 0))
    assert len(removed) == 10
    assert not any(r == 0 and 10 < c < 29 for r, c in removed)  # the top row stays, but at the cell's own sides


@pytest.mark.parametrize("labels, fraction, message", [
    (np.zeros((4, 4, 4), np.int32), 0.1, "2D"),
    (np.zeros((4, 4), np.int32), 0.5, r"\[0, 0.5\)"),
    (np.zeros((4, 4), np.int32), -0.1, r"\[0, 0.5\)"),
])
def test_bad_input_is_refused(labels, fraction, message):
    with pytest.raises(CellcascadeError, match=message):
        shrink_cells(labels, fraction)
