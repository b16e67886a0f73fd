"""Touching cells: pairs found, dips measured, known answers, clear errors."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellcascade.data import AnnotatedImage
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.contacts import contact_dip, contact_statistics, touching_pairs


def two_cells(contact: str) -> tuple[np.ndarray, np.ndarray]:
    """Two 16-px nuclei side by side, uniformly bright (100 over a background of 10), blurred.

    contact: "flat" (two half-ellipses pressed along a straight line), "waist" (two discs meeting at one point)
    or "line" (flat, with a dark line along the contact).
    """
    yy, xx = np.indices((40, 60)).astype(float)
    labels = np.zeros((40, 60), np.int32)
    if contact == "waist":
        labels[(yy - 20) ** 2 + (xx - 22) ** 2 <= 64] = 1
        labels[(yy - 20) ** 2 + (xx - 38) ** 2 <= 64] = 2
    else:
        ellipse = ((yy - 20) / 9) ** 2 + ((xx - 30) / 16) ** 2 <= 1
        labels[ellipse & (xx < 30)] = 1
        labels[ellipse & (xx >= 30)] = 2
    signal = 100.0 * (labels > 0)
    if contact == "line":
        signal[:, 29:31] *= 0.4
    return 10.0 + ndi.gaussian_filter(signal, 1.5), labels


def test_touching_pairs_counts_shared_edges_only():
    labels = np.zeros((8, 12), np.int32)
    labels[1:4, 1:4] = 1
    labels[1:4, 4:7] = 2  # shares an edge with 1
    labels[4:7, 7:10] = 3  # touches 2 at a corner only
    labels[5:7, 1:3] = 4  # alone
    assert touching_pairs(labels) == [(1, 2)]
    labels[4, 6] = 3  # now 3 shares an edge with 2 (below it)
    assert touching_pairs(labels) == [(1, 2), (2, 3)]


def test_dip_is_near_one_for_a_flat_contact_and_lower_for_a_waist_or_a_dark_line():
    dips = {}
    for contact in ("flat", "waist", "line"):
        image, labels = two_cells(contact)
        assert touching_pairs(labels) == [(1, 2)]
        dips[contact] = contact_dip(image, labels, (1, 2), background=10.0)
    assert dips["flat"] == pytest.approx(1.0, abs=0.02)
    assert dips["waist"] < 0.9
    assert dips["line"] < 0.8


def test_dip_is_nan_when_the_cells_are_not_above_background():
    image, labels = two_cells("flat")
    assert np.isnan(contact_dip(np.full_like(image, 10.0), labels, (1, 2), background=10.0))


def test_contact_statistics_of_dense_images():
    flat = AnnotatedImage(*two_cells("flat"), name="flat", dense=True)
    waist = AnnotatedImage(*two_cells("waist"), name="waist", dense=True)
    lone_labels = np.zeros((40, 60), np.int32)
    lone_labels[10:20, 10:20] = 1
    lone = AnnotatedImage(10.0 + 100.0 * (lone_labels > 0), lone_labels, name="lone", dense=True)
    stats = contact_statistics([flat, waist, lone])
    assert (stats["cells"], stats["pairs"]) == (5, 2)
    assert stats["pairs_per_cell"] == pytest.approx(0.4)
    assert stats["dip"]["n"] == 2
    assert stats["dip"]["q25"] < stats["dip"]["median"] < stats["dip"]["q75"]
    alone = contact_statistics([lone])
    assert alone["pairs"] == 0 and np.isnan(alone["dip"]["median"])


def test_contact_statistics_refuse_sparse_or_3d_annotations():
    image, labels = two_cells("flat")
    with pytest.raises(CellcascadeError, match="dense annotations"):
        contact_statistics([AnnotatedImage(image, labels, name="sparse")])
    with pytest.raises(CellcascadeError, match="2D"):
        contact_statistics([AnnotatedImage(np.stack([image] * 2), np.stack([labels] * 2), name="vol", dense=True)])
    with pytest.raises(CellcascadeError, match="at least one"):
        contact_statistics([])
