"""Per-cell brightness variation: factors per cell, background kept, deterministic, bad input refused."""

import numpy as np
import pytest

from cellcascade.errors import CellcascadeError
from cellcascade.imaging.brightness import FACTOR_RANGE, cell_brightness_factors, vary_cell_brightness


def two_cells():
    labels = np.zeros((48, 64), np.int32)
    labels[8:20, 8:20] = 3  # ids need not be consecutive
    labels[28:40, 36:52] = 7
    image = np.where(labels > 0, 90.0, 10.0).astype(np.float32)
    return image, labels


def test_each_cell_is_scaled_by_its_own_factor_and_the_background_far_away_stays():
    image, labels = two_cells()
    out = vary_cell_brightness(image, labels, spread=0.5, background=10.0, rng=np.random.default_rng(1), smooth=0)
    factors = cell_brightness_factors(2, 0.5, np.random.default_rng(1))
    for cell, factor in zip((3, 7), factors, strict=True):
        np.testing.assert_allclose(out[labels == cell], 10.0 + 80.0 * factor, rtol=1e-5)
    assert not np.isclose(factors[0], factors[1])
    np.testing.assert_allclose(out[labels == 0], 10.0, rtol=1e-5)  # a flat background has no signal to scale
    assert out.dtype == np.float32 and out.shape == image.shape


def test_the_rim_outside_a_cell_follows_its_cell_and_fades_with_distance():
    image, labels = two_cells()
    image = image + np.float32(40.0) * (labels == 0)  # a bright background: its signal above 10 shows the factor
    out = vary_cell_brightness(image, labels, spread=1.0, background=10.0, rng=np.random.default_rng(2), halo=4.0,
                               smooth=0)
    factor = cell_brightness_factors(2, 1.0, np.random.default_rng(2))[0]
    near, far = (out[14, 21] - 10) / 40, (out[14, 29] - 10) / 40  # 2 and 10 px right of cell 3's edge
    assert near == pytest.approx(1 + (factor - 1) * np.exp(-(2 / 4) ** 2), rel=1e-4)
    assert abs(far - 1) < abs(near - 1)


def test_zero_spread_is_the_identity_and_a_seed_repeats():
    image, labels = two_cells()
    np.testing.assert_array_equal(
        vary_cell_brightness(image, labels, spread=0.0, background=10.0, rng=np.random.default_rng(0)), image)
    first = vary_cell_brightness(image, labels, spread=0.3, background=10.0, rng=np.random.default_rng(4))
    again = vary_cell_brightness(image, labels, spread=0.3, background=10.0, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)


def test_factors_are_log_normal_and_clipped():
    factors = cell_brightness_factors(20000, 0.3, np.random.default_rng(0))
    assert np.std(np.log(factors)) == pytest.approx(0.3, rel=0.03)
    assert np.median(factors) == pytest.approx(1.0, abs=0.02)
    wide = cell_brightness_factors(1000, 3.0, np.random.default_rng(0))
    assert wide.min() == FACTOR_RANGE[0] and wide.max() == FACTOR_RANGE[1]


def test_bad_input_is_refused():
    image, labels = two_cells()
    with pytest.raises(CellcascadeError, match="at least 0"):
        vary_cell_brightness(image, labels, spread=-0.1, background=10.0, rng=np.random.default_rng(0))
    with pytest.raises(CellcascadeError, match="same shape"):
        vary_cell_brightness(image, labels[:10], spread=0.3, background=10.0, rng=np.random.default_rng(0))
