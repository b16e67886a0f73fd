"""Labels and images agree: every label is a visible cell (known answers, the real sample, the shipped cascade)."""

from pathlib import Path

import numpy as np
import pytest

from cellcascade.data import load_sample
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.label_agreement import label_contrast
from cellcascade.evaluation.segmenters import relabel

MARGIN = 1.0  # background-noise units; the real sample's dimmest annotated nucleus scores 1.4


def test_known_contrast_of_a_bright_square_and_of_an_empty_label():
    rng = np.random.default_rng(0)
    image = rng.normal(10.0, 2.0, (64, 64))
    labels = np.zeros((64, 64), dtype=np.int32)
    labels[10:20, 10:20] = 1  # bright cell, 6 noise std above the background
    labels[40:50, 40:50] = 2  # a label on plain background
    image[10:20, 10:20] += 12.0
    contrast = label_contrast(image, labels)
    assert contrast[1] == pytest.approx(6.0, abs=0.6)
    assert abs(contrast[2]) < 0.5


def test_bad_input_is_refused():
    with pytest.raises(CellcascadeError, match="2D of one shape"):
        label_contrast(np.zeros((8, 8)), np.zeros((8, 9), dtype=int))


def test_real_annotations_pass_and_shifted_labels_fail():
    (item,) = load_sample()
    labels = relabel(item.labels)
    assert min(label_contrast(item.image, labels).values()) > MARGIN
    shifted = np.roll(labels, 40, axis=1)  # labels no longer on their cells
    assert np.median(list(label_contrast(item.image, shifted).values())) < MARGIN / 2


BUDGET_CASCADE = Path(__file__).resolve().parents[1] / "benchmarks" / "cascades" / "sample-budget"


# fewer cells for the budget cascade, whose denser, larger nuclei the shifted control would otherwise still hit
# with a border margin, the cut cells along the image border must be visible too
@pytest.mark.parametrize("which, cells, margin", [("shipped", (10, 12), 0), ("benchmark budget", (6, 8), 0),
                                                  ("benchmark budget", (6, 8), 16)])
def test_every_label_of_the_shipped_and_the_benchmark_cascade_is_a_visible_cell(which, cells, margin):
    from cellcascade.pipelines.cascade import Cascade
    from cellcascade.weights import default_cascade

    cascade = Cascade.load(default_cascade() if which == "shipped" else BUDGET_CASCADE)
    for index in range(2):
        sample = cascade.generate(index, (128, 128), seed=0, cells=cells, texture_steps=20, border_margin=margin)
        assert any(c["cut"] for c in sample.cells) == bool(margin)
        contrast = label_contrast(sample.image, sample.labels)
        assert len(contrast) >= cells[0] - 2
        assert min(contrast.values()) > MARGIN, sorted(contrast.values())[:3]
        shifted = np.roll(sample.labels, 64, axis=1)
        assert np.median(list(label_contrast(sample.image, shifted).values())) < MARGIN
