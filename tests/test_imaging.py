"""Imaging model: known-answer fits on synthetic images, output dtype/range, determinism, serialisation, errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from cellcascade.data import AnnotatedImage, load_sample, read_ctc
from cellcascade.errors import CellcascadeError
from cellcascade.imaging import ImagingModel, background_mask, fit_noise, fit_psf_sigma
from cellcascade.imaging.noise import quantization_step

GOWT1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Fluo-N2DH-GOWT1"


def synthetic_item(seed, sigma=2.0, level=100.0, bg_std=5.0, gain=2.0, offset=16.0, size=256, dense=True,
                   dtype="uint16", n=25):
    """Flat ellipses (known intensities) imaged with known blur, background and noise; half unlabelled if sparse."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    clean = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[:size, :size]
    count = 0
    for _ in range(300):
        if count == n:
            break
        cy, cx = rng.uniform(15, size - 15, 2)
        a, b, t = rng.uniform(6, 11), rng.uniform(5, 8), rng.uniform(0, np.pi)
        u = ((yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)) / a
        v = (-(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)) / b
        inside = u**2 + v**2 <= 1
        if (labels[max(int(cy) - 16, 0) : int(cy) + 16, max(int(cx) - 16, 0) : int(cx) + 16] > 0).any():
            continue
        count += 1
        labels[inside] = count
        clean[inside] = rng.uniform(50, 400)
    truth = ImagingModel(dtype=dtype, background_level=level, background_std=bg_std, background_scale=size / 16,
                         psf_sigma=sigma, noise_gain=gain, noise_offset=offset)
    image = truth.apply(clean, rng)
    if not dense:
        keep = rng.random(count) < 0.5
        keep[0] = True
        labels = np.where(np.isin(labels, np.flatnonzero(keep) + 1), labels, 0)
    return AnnotatedImage(image, labels, f"synthetic{seed}", dense=dense)


def test_fit_recovers_known_parameters():
    items = [synthetic_item(seed) for seed in range(3)]
    model = ImagingModel.fit(items)
    assert model.dtype == "uint16"
    assert model.psf_sigma == pytest.approx(2.0, abs=0.2)
    assert model.psf_sigma_z is None
    assert model.noise_gain == pytest.approx(2.0, rel=0.15)
    for mean in (100.0, 400.0):  # the variance itself, where data exist (the offset alone is weakly determined)
        assert model.noise_std(mean) ** 2 == pytest.approx(2.0 * mean + 16.0, rel=0.1)
    assert model.background_level == pytest.approx(100.0, abs=2.0)
    assert model.background_std == pytest.approx(5.0, rel=0.4)
    assert model.background_scale == 16.0
    assert model.quantization_step == 1.0


@pytest.mark.parametrize("sigma, gain, offset", [(1.0, 0.5, 4.0), (3.0, 0.0, 25.0)])
def test_fit_recovers_other_blur_and_noise(sigma, gain, offset):
    items = [synthetic_item(seed, sigma=sigma, gain=gain, offset=offset, bg_std=0.0) for seed in range(2)]
    model = ImagingModel.fit(items)
    assert model.psf_sigma == pytest.approx(sigma, abs=0.2)
    assert model.noise_std(150.0) ** 2 == pytest.approx(gain * 150.0 + offset, rel=0.15)


def test_fit_sparse_annotation_uses_only_data_shown_background():
    items = [synthetic_item(seed, dense=False) for seed in range(2)]
    mask = background_mask(items[0], psf_sigma=2.0)
    # Unlabelled cells are not taken as background: no mask pixel is bright.
    assert mask.mean() > 0.3
    assert np.percentile(items[0].image[mask], 99.9) < 100 + 5 * np.sqrt(2 * 100 + 16) + 15
    model = ImagingModel.fit(items)
    assert model.psf_sigma == pytest.approx(2.0, abs=0.25)
    assert model.background_level == pytest.approx(100.0, abs=2.5)


def test_clipped_background_level_is_recovered():
    # Low-count background clipped at 0 (as in Fluo-N2DH-GOWT1): most pixels read 0, the median says 0.
    items = [synthetic_item(seed, level=1.5, bg_std=0.0, gain=2.9, offset=0.5, dtype="uint8") for seed in range(2)]
    values = items[0].image[background_mask(items[0], 2.0)]
    assert np.median(values) <= 1.0
    model = ImagingModel.fit(items)
    assert model.dtype == "uint8"
    assert model.background_level == pytest.approx(1.5, abs=0.5)


def test_clipped_mean_with_many_photons_is_the_normal_answer_and_small():
    # A near-zero fitted gain (e.g. on an image smoothed by resizing) once made the exact Poisson sum need 10^9 terms.
    from scipy.stats import norm

    from cellcascade.imaging.background import MAX_EXACT_POISSON_MEAN, clipped_mean

    level, offset, floor = 3.0, 4.0, 0.0
    sd = np.sqrt(offset)
    normal_answer = level + (floor - level) * norm.cdf((floor - level) / sd) + sd * norm.pdf((floor - level) / sd)
    assert clipped_mean(level, 1e-9, offset, floor) == pytest.approx(normal_answer, rel=1e-6)
    # on both sides of the switch the exact sum and the approximation agree
    gain = level / MAX_EXACT_POISSON_MEAN
    assert clipped_mean(level, gain * 0.999, offset, floor) == pytest.approx(clipped_mean(level, gain * 1.001, offset, floor), rel=1e-3)


def test_clipped_background_level_with_a_near_zero_gain():
    # the GOWT1 budget resized to 24-px cells fitted gain 1.7e-9: background_level must still find the level
    from cellcascade.imaging.background import background_level

    rng = np.random.default_rng(0)
    values = np.maximum(rng.normal(1.0, 2.0, 20000), 0.0)  # level 1, read noise sd 2, clipped at 0
    assert background_level(values, 0.0, 1e-9, 4.0) == pytest.approx(1.0, abs=0.1)


def test_fit_psf_and_noise_functions_directly():
    item = synthetic_item(5, sigma=1.5, bg_std=0.0)
    sigma, sigma_z = fit_psf_sigma([item])
    assert sigma == pytest.approx(1.5, abs=0.2) and sigma_z is None
    rng = np.random.default_rng(0)
    flat = rng.normal(50.0, 3.0, (200, 200))
    gain, offset = fit_noise([flat])
    assert gain * 50 + offset == pytest.approx(9.0, rel=0.1)


def test_quantization_step_detects_rescaled_levels():
    rng = np.random.default_rng(0)
    plain = rng.poisson(40, (128, 128)).astype(np.uint8)
    assert quantization_step(plain) == 1.0
    rescaled = np.rint(2.5 * rng.poisson(40, (128, 128))).astype(np.uint8)
    assert quantization_step(rescaled) == pytest.approx(2.5, abs=0.1)
    assert quantization_step(rng.normal(size=(8, 8)).astype(np.float32)) == 0.0


def test_apply_dtype_range_and_determinism():
    model = ImagingModel(dtype="uint8", background_level=10, background_std=2, background_scale=8, psf_sigma=1.5,
                         noise_gain=1.0, noise_offset=4.0)
    clean = np.zeros((64, 64), np.float32)
    clean[10:30, 10:30] = 1000.0  # far above uint8: must clip
    first = model.apply(clean, np.random.default_rng(3))
    assert first.dtype == np.uint8 and first.shape == (64, 64)
    assert first.max() == 255 and first[20, 20] == 255
    np.testing.assert_array_equal(first, model.apply(clean, np.random.default_rng(3)))
    np.testing.assert_array_equal(first, model.apply(clean, 3))
    assert not np.array_equal(first, model.apply(clean, 4))
    limited = ImagingModel.from_dict({**model.to_dict(), "dtype": "uint16", "value_range": [0, 4095]})
    assert limited.apply(clean * 10, 0).max() == 4095


def test_apply_noise_and_blur_statistics():
    model = ImagingModel(dtype="float32", background_level=100.0, noise_gain=2.0, noise_offset=9.0, psf_sigma=2.0)
    image = model.apply(np.zeros((256, 256), np.float32), 0)
    assert image.dtype == np.float32
    assert image.mean() == pytest.approx(100.0, abs=0.3)
    assert image.var() == pytest.approx(209.0, rel=0.05)
    noiseless = ImagingModel(dtype="float32", psf_sigma=2.0, quantization_step=0)
    delta = np.zeros((41, 41), np.float32)
    delta[20, 20] = 1.0
    blurred = noiseless.apply(delta, 0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-4)
    assert blurred[20, 20] == pytest.approx(1 / (2 * np.pi * 4.0), rel=0.05)  # peak of a 2D Gaussian, sigma 2


def test_apply_3d_and_blur_false():
    model = ImagingModel(dtype="uint16", background_level=50, psf_sigma=1.0, psf_sigma_z=2.0, noise_offset=1.0)
    volume = model.apply(np.zeros((6, 32, 32), np.float32), 0)
    assert volume.shape == (6, 32, 32) and volume.dtype == np.uint16
    spike = np.zeros((16, 16), np.float32)
    spike[8, 8] = 500.0
    sharp = ImagingModel(dtype="float32", psf_sigma=3.0, quantization_step=0).apply(spike, 0, blur=False)
    assert sharp[8, 8] == pytest.approx(500.0)


def test_to_dict_round_trip_is_json():
    model = ImagingModel.fit([synthetic_item(0)])
    config = json.loads(json.dumps(model.to_dict()))
    again = ImagingModel.from_dict(config)
    assert again == model
    clean = np.full((32, 32), 20.0, np.float32)
    np.testing.assert_array_equal(model.apply(clean, 1), again.apply(clean, 1))


def test_bad_inputs_raise_clear_errors():
    model = ImagingModel()
    with pytest.raises(CellcascadeError, match="2D"):
        model.apply(np.zeros(10, np.float32))
    with pytest.raises(CellcascadeError, match="finite"):
        model.apply(np.full((8, 8), np.nan, np.float32))
    with pytest.raises(CellcascadeError, match="unknown keys"):
        ImagingModel.from_dict({"psf": 1.0})
    with pytest.raises(CellcascadeError, match="psf_sigma"):
        ImagingModel(psf_sigma=-1.0)
    with pytest.raises(CellcascadeError, match="dtype"):
        ImagingModel(dtype="complex64")
    with pytest.raises(CellcascadeError, match="at least one"):
        ImagingModel.fit([])
    flat = AnnotatedImage(np.zeros((3, 16, 16), np.uint16), np.ones((3, 16, 16), np.int32), "volume")
    with pytest.raises(CellcascadeError, match="one dimensionality"):
        ImagingModel.fit([synthetic_item(0), flat])


def test_fit_3d_gives_axial_sigma():
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:24, :64, :64]
    labels = np.zeros((24, 64, 64), np.int32)
    clean = np.zeros((24, 64, 64), np.float32)
    for k, (cz, cy, cx) in enumerate([(12, 20, 20), (12, 44, 44), (12, 20, 44)], start=1):
        inside = ((zz - cz) / 6) ** 2 + ((yy - cy) / 9) ** 2 + ((xx - cx) / 8) ** 2 <= 1
        labels[inside] = k
        clean[inside] = 200.0 + 50 * k
    truth = ImagingModel(dtype="uint16", background_level=100, psf_sigma=1.0, psf_sigma_z=2.5, noise_gain=1.0,
                         noise_offset=4.0)
    item = AnnotatedImage(truth.apply(clean, rng), labels, "volume", dense=True)
    model = ImagingModel.fit([item])
    assert model.psf_sigma == pytest.approx(1.0, abs=0.3)
    assert model.psf_sigma_z == pytest.approx(2.5, abs=0.5)
    assert model.apply(clean, 0).shape == clean.shape


def test_fit_on_embedded_sample():
    model = ImagingModel.fit(load_sample())
    assert model.dtype == "uint16"
    assert 0.3 <= model.psf_sigma <= 8.0
    assert 5 < model.background_level < 40  # the sample's background peak is near 20
    assert model.noise_std(model.background_level) > 0
    image = model.apply(np.zeros((256, 256), np.float32), 0)
    assert abs(float(image.mean()) - model.background_level) < 3 * model.background_std + 0.5


def test_fit_on_gowt1_if_available():
    if not GOWT1.is_dir():
        pytest.skip(f"real data folder {GOWT1} is absent (it lives beside the project checkout)")
    items = read_ctc(GOWT1)[:2]
    model = ImagingModel.fit(items)
    assert model.dtype == "uint8"
    assert model.background_level < 5  # dark, clipped background
    assert model.quantization_step > 1.5  # the frames use only every 2nd-3rd grey value
    assert 0.3 <= model.psf_sigma <= 4
