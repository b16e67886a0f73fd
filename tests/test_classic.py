"""Classic baseline generator: fitted statistics, label/image consistency, dtype, determinism, sizes, errors."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops

from cellcascade.classic import ClassicGenerator, perturbed_ellipse
from cellcascade.data import AnnotatedImage, load_sample, load_sample_3d
from cellcascade.errors import CellcascadeError
from cellcascade.imaging import ImagingModel


@pytest.fixture(scope="module")
def sample_generator():
    return ClassicGenerator.fit(load_sample())


def tiny_synthetic_set():
    """Two 128×128 images of flat ellipses (semi-axes 7×5 px, 150 above a background of 40), dense labels."""
    imaging = ImagingModel(dtype="uint16", background_level=40.0, psf_sigma=1.2, noise_gain=1.0, noise_offset=4.0)
    yy, xx = np.mgrid[:128, :128]
    items = []
    for seed in range(2):
        rng = np.random.default_rng(seed)
        labels = np.zeros((128, 128), np.int32)
        for k, (cy, cx) in enumerate([(24, 24), (24, 80), (64, 50), (100, 30), (100, 96), (60, 104)], start=1):
            cy, cx = cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)
            labels[((yy - cy) / 7.0) ** 2 + ((xx - cx) / 5.0) ** 2 <= 1] = k
        clean = np.where(labels > 0, 150.0, 0.0).astype(np.float32)
        items.append(AnnotatedImage(imaging.apply(clean, rng), labels, f"tiny{seed}", dense=True))
    return items


def local_background(image, labels, label, width=4):
    """Median of the pixels in a band just outside one cell that belong to no cell."""
    own = labels == label
    band = ndi.binary_dilation(own, iterations=width) & ~ndi.binary_dilation(own, iterations=2) & (labels == 0)
    return float(np.median(image[band])) if band.any() else None


def test_fit_on_sample_learns_real_statistics(sample_generator):
    g = sample_generator
    assert g.imaging.dtype == "uint16"
    real_areas = [r.area for r in regionprops(load_sample()[0].labels)]
    assert min(real_areas) <= g.area_range[0] <= g.area_range[1] <= max(real_areas)
    assert len(g.intensities) == 125 and len(g.contrasts) == 125
    assert 50 < len(g.axes) <= 125  # whole (not border-cut) cells only
    assert all(major >= minor > 0 for major, minor in g.axes)
    assert g.density == pytest.approx(1e4 * 125 / 512**2, rel=1e-6)  # dense: annotated cells per area
    assert 0 < g.texture_scale <= 8 and 0 <= g.irregularity < 0.3


def test_generate_dtype_labels_and_consistency(sample_generator):
    image, labels = sample_generator.generate((256, 256), rng=0)
    assert image.shape == labels.shape == (256, 256)
    assert image.dtype == np.uint16 and labels.dtype == np.uint16
    ids = np.unique(labels)[1:]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    expected = sample_generator.density * 256 * 256 / 1e4
    assert 0.8 * expected <= len(ids) <= expected + 1
    brighter = 0
    for cell in ids:
        background = local_background(image, labels, cell)
        if background is not None:
            brighter += image[labels == cell].mean() > background
    assert brighter >= 0.95 * len(ids)


def test_same_seed_same_output_and_json_round_trip(sample_generator):
    first = sample_generator.generate((128, 128), rng=7)
    second = sample_generator.generate((128, 128), rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    other = sample_generator.generate((128, 128), rng=8)
    assert not np.array_equal(first[1], other[1])
    restored = ClassicGenerator.from_dict(json.loads(json.dumps(sample_generator.to_dict())))
    again = restored.generate((128, 128), rng=7)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_generated_areas_within_real_range(sample_generator):
    _, labels = sample_generator.generate((256, 256), rng=1, n_cells=30)
    assert labels.max() == 30
    low, high = sample_generator.area_range
    areas = [r.area for r in regionprops(labels)]
    # Cells are placed whole (never overwritten at overlap 0), so every area is a full shape.
    assert 0.7 * low <= min(areas) and max(areas) <= 1.2 * high


def test_fit_and_generate_on_tiny_synthetic_set():
    items = tiny_synthetic_set()
    g = ClassicGenerator.fit(items)
    assert g.imaging.psf_sigma == pytest.approx(1.2, abs=0.3)
    assert g.imaging.background_level == pytest.approx(40.0, abs=1.5)
    areas = np.pi / 4 * np.prod(np.asarray(g.axes), axis=1)
    assert np.median(areas) == pytest.approx(np.pi * 7 * 5, rel=0.15)
    assert np.median(g.intensities) == pytest.approx(150.0, rel=0.15)
    assert np.median(g.contrasts) < 0.1  # flat cells: little texture once the noise is removed
    image, labels = g.generate((96, 96), rng=0, n_cells=4, clustering=1.0)
    assert labels.max() == 4
    inside = np.mean([image[labels == k].mean() for k in range(1, 5)])
    assert inside == pytest.approx(40 + 150, rel=0.25)
    assert np.median(image[ndi.distance_transform_edt(labels == 0) > 6]) == pytest.approx(40, abs=3)


def test_perturbed_ellipse_is_a_single_cell():
    rng = np.random.default_rng(0)
    mask = perturbed_ellipse(10.0, 6.0, 0.05, rng)
    assert mask.dtype == bool and ndi.label(mask)[1] == 1
    assert mask.shape[0] > mask.shape[1]  # major axis along Y
    assert mask.sum() == pytest.approx(np.pi * 10 * 6, rel=0.15)


def test_bad_inputs_raise_clear_errors(sample_generator):
    with pytest.raises(CellcascadeError, match="2D data is required"):
        ClassicGenerator.fit(load_sample_3d())
    with pytest.raises(CellcascadeError, match="at least one"):
        ClassicGenerator.fit([])
    with pytest.raises(CellcascadeError, match="16"):
        sample_generator.generate((8, 8), rng=0)
    with pytest.raises(CellcascadeError, match="clustering"):
        sample_generator.generate((64, 64), rng=0, clustering=2.0)
    with pytest.raises(CellcascadeError, match="unknown keys"):
        ClassicGenerator.from_dict({**sample_generator.to_dict(), "colour": "green"})
    with pytest.raises(CellcascadeError, match="axes"):
        ClassicGenerator.from_dict({**sample_generator.to_dict(), "axes": []})
    border_only = AnnotatedImage(np.ones((32, 32), np.uint8), np.pad(np.ones((4, 32), np.int32), ((0, 28), (0, 0))), "edge")
    with pytest.raises(CellcascadeError, match="border"):
        ClassicGenerator.fit([border_only])
