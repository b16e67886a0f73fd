"""3D texture: correlated noise between slices, slice-by-slice texturing, the axial finish, continuity metrics."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from scipy import ndimage as ndi

from cellcascade.data import AnnotatedImage, load_sample
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.continuity import (
    adjacent_slice_correlation,
    continuity_scores,
    slice_pair_correlations,
    stripe_score,
)
from cellcascade.imaging import ImagingModel
from cellcascade.imaging.psf import volume_psf_sigmas
from cellcascade.models.conditions import label_conditions, volume_slice_conditions
from cellcascade.pipelines.texture import load_texture_pipeline
from cellcascade.pipelines.texture3d import (
    check_deterministic_sampler,
    correlated_noise,
    finish_volume,
    missing_axial_sigma,
    slice_correlation,
    smooth_along_z,
    texture_volume,
)
from cellcascade.training.loop import TrainConfig
from cellcascade.training.texture import train_texture_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    """A texture model (tiny preset, 16 px patches) trained for 2 steps on a 128² crop of the sample."""
    item = load_sample()[0]
    crop = AnnotatedImage(item.image[:128, :128], item.labels[:128, :128], "crop", dense=True)
    out = tmp_path_factory.mktemp("texture3d") / "tiny"
    train_texture_model([crop], out, config=TrainConfig(steps=2, batch_size=4), patch_size=16, preset="tiny",
                        num_patches=32, device="cpu", progress=False)
    return load_texture_pipeline(out)


def two_ellipsoids(shape=(6, 32, 32)) -> np.ndarray:
    """int32 (Z, Y, X): two ellipsoids (ids 1, 2), each cut by every slice."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    labels = np.zeros(shape, np.int32)
    mid = (shape[0] - 1) / 2
    labels[((z - mid) / (mid + 1)) ** 2 + ((y - 10) / 7) ** 2 + ((x - 10) / 7) ** 2 <= 1] = 1
    labels[((z - mid) / (mid + 1)) ** 2 + ((y - 22) / 8) ** 2 + ((x - 22) / 6) ** 2 <= 1] = 2
    return labels


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# --- correlated noise -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0.0, 1.0, 4.0, None, float("inf")])
def test_noise_slices_are_standard_white_noise_with_the_planned_correlation(length):
    spacing = (1.0, 0.5, 0.5)
    noise = correlated_noise((4, 128, 128), spacing, length, seeded())
    assert noise.shape == (4, 128, 128) and noise.dtype == torch.float32
    noise = noise.double()
    for z in range(4):  # every slice is what the model was trained on
        s = noise[z]
        assert abs(float(s.mean())) < 0.03 and abs(float(s.std()) - 1) < 0.03
        assert abs(float(torch.corrcoef(torch.stack([s[:, 1:].ravel(), s[:, :-1].ravel()]))[0, 1])) < 0.03
    # correlation of neighbouring slices = mean of the per-frequency AR(1) coefficient
    expected = float(slice_correlation((128, 128), spacing, length).mean())
    measured = np.mean([float(torch.corrcoef(torch.stack([noise[z].ravel(), noise[z + 1].ravel()]))[0, 1])
                        for z in range(3)])
    assert abs(measured - expected) < 0.03


def test_noise_correlation_known_values():
    assert slice_correlation((2, 2), (2.0, 1, 1), 2.0)[0, 0] == pytest.approx(np.exp(-1))
    assert (slice_correlation((3, 3), (1, 1, 1), 0.0) == 0).all()
    assert (slice_correlation((3, 3), (1, 1, 1), float("inf")) == 1).all()
    rho = slice_correlation((8, 8), (2.0, 1.0, 1.0), None)  # isotropic: faster decay at higher frequency
    assert rho[0, 0] == 1 and rho[0, 1] > rho[0, 2] > rho[0, 4] and rho[0, 1] == pytest.approx(np.exp(-np.pi / 2))
    assert slice_correlation((8, 8), (1.0, 1.0, 1.0), None)[0, 1] > rho[0, 1]  # closer slices, more alike
    noise = correlated_noise((3, 8, 8), (1, 1, 1), None, seeded(3))
    assert torch.equal(noise, correlated_noise((3, 8, 8), (1, 1, 1), None, seeded(3)))
    with pytest.raises(CellcascadeError, match="correlation length"):
        slice_correlation((2, 2), (1, 1, 1), -1.0)


# --- texturing --------------------------------------------------------------------------------------------------


def test_texture_volume_shape_dtype_and_determinism(tiny_pipe):
    labels = two_ellipsoids()
    a = texture_volume(tiny_pipe, labels, (2.0, 1.0, 1.0), num_inference_steps=2, generator=seeded(0))
    b = texture_volume(tiny_pipe, labels, (2.0, 1.0, 1.0), num_inference_steps=2, generator=seeded(0))
    c = texture_volume(tiny_pipe, labels, (2.0, 1.0, 1.0), num_inference_steps=2, generator=seeded(1))
    assert a.shape == labels.shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # a canvas smaller than the model's patch is padded and cropped back
    small = texture_volume(tiny_pipe, labels[:3, :12, :10], (1, 1, 1), num_inference_steps=2, generator=seeded(0))
    assert small.shape == (3, 12, 10) and np.isfinite(small).all()


def test_correlated_noise_makes_neighbouring_slices_agree(tiny_pipe):
    labels = two_ellipsoids()
    spacing = (1.0, 1.0, 1.0)
    corr = {}
    for name, length in [("independent", 0.0), ("ar1", 3.0), ("isotropic", None)]:
        volume = texture_volume(tiny_pipe, labels, spacing, num_inference_steps=2, generator=seeded(0),
                                correlation_length=length)
        corr[name] = adjacent_slice_correlation(volume, labels, within_cell=True)
    assert abs(corr["independent"]) < 0.2
    assert corr["ar1"] > corr["independent"] + 0.3
    assert corr["isotropic"] > corr["independent"] + 0.05


def test_shared_noise_gives_identical_slices_where_labels_are_identical(tiny_pipe):
    labels = np.zeros((4, 20, 20), np.int32)
    labels[:, 4:14, 5:15] = 1  # a prism: every slice has the same labels...
    labels[3, 15:19, 15:19] = 2  # ...except the last
    volume = texture_volume(tiny_pipe, labels, (1, 1, 1), num_inference_steps=2, generator=seeded(0),
                            correlation_length=float("inf"), distance="slice")
    np.testing.assert_array_equal(volume[0], volume[1])
    np.testing.assert_array_equal(volume[0], volume[2])
    assert not np.array_equal(volume[2], volume[3])


def test_texture_volume_rejects_bad_input(tiny_pipe):
    labels = two_ellipsoids((3, 16, 16))
    kwargs = dict(num_inference_steps=1, generator=seeded(0))
    with pytest.raises(CellcascadeError, match="3D"):
        texture_volume(tiny_pipe, labels[0], (1, 1, 1), **kwargs)
    with pytest.raises(CellcascadeError, match="integer"):
        texture_volume(tiny_pipe, labels.astype(np.float32), (1, 1, 1), **kwargs)
    with pytest.raises(CellcascadeError, match="empty"):
        texture_volume(tiny_pipe, labels[:0], (1, 1, 1), **kwargs)
    for spacing in [(1, 1), (1, 0, 1), (1, -1, 1), ("a", 1, 1), (1, float("nan"), 1)]:
        with pytest.raises(CellcascadeError, match="spacing"):
            texture_volume(tiny_pipe, labels, spacing, **kwargs)
    with pytest.raises(CellcascadeError, match="correlation length"):
        texture_volume(tiny_pipe, labels, (1, 1, 1), correlation_length=-2.0, **kwargs)
    with pytest.raises(CellcascadeError, match="steps"):
        texture_volume(tiny_pipe, labels, (1, 1, 1), num_inference_steps=0)
    with pytest.raises(CellcascadeError, match="TexturePipeline"):
        texture_volume(object(), labels, (1, 1, 1), **kwargs)
    with pytest.raises(CellcascadeError, match="distance"):
        texture_volume(tiny_pipe, labels, (1, 1, 1), distance="2d", **kwargs)


def ball(shape=(15, 21, 21), radius=6.0, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """int32 (Z, Y, X): one ball of physical `radius` (id 3) at the centre of a volume of voxel size `spacing`."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return np.where(z**2 + y**2 + x**2 <= radius**2, 3, 0).astype(np.int32)


def test_slice_conditions_measure_the_distance_in_3d():
    labels = ball()
    conditions = volume_slice_conditions(labels, (1.0, 1.0, 1.0))
    assert conditions.shape == (15, 3, 21, 21) and conditions.dtype == np.float32
    for z in range(labels.shape[0]):  # foreground and boundary are the slice's own
        np.testing.assert_array_equal(conditions[z, :2], label_conditions(labels[z])[:2])
    # the middle slice of a ball sees about the 2D distance map of its disc; slices towards the caps see less
    peaks = conditions[:, 2].max(axis=(1, 2))
    assert peaks[7] == 1.0 and peaks[1] < 0.35 and peaks[13] < 0.35
    assert np.all(np.diff(peaks[1:8]) > 0) and np.all(np.diff(peaks[7:14]) < 0)
    middle_2d = label_conditions(labels[7])[2]
    assert np.abs(conditions[7, 2] - middle_2d).max() < 0.2
    # every slice of a per-slice distance peaks at 1: that is what made the caps look like whole small cells
    assert label_conditions(labels[1])[2].max() == 1.0
    # voxel size counts: the same voxels at a z step of 2 are a cell twice as tall, whose slice 2 lies deeper inside
    tall = volume_slice_conditions(labels, (2.0, 1.0, 1.0))[:, 2]
    assert tall[2].max() > conditions[2, 2].max() + 0.1
    with pytest.raises(CellcascadeError, match="3D"):
        volume_slice_conditions(labels[0], (1.0, 1.0, 1.0))


def test_texture_volume_conditions_on_the_3d_distance_by_default(tiny_pipe):
    labels = ball((6, 24, 24), radius=5.0, spacing=(2.0, 1.0, 1.0))
    kwargs = dict(num_inference_steps=2, correlation_length=None)
    default = texture_volume(tiny_pipe, labels, (2.0, 1.0, 1.0), generator=seeded(0), **kwargs)
    in_3d = texture_volume(tiny_pipe, labels, (2.0, 1.0, 1.0), generator=seeded(0), distance="3d", **kwargs)
    per_slice = texture_volume(tiny_pipe, labels, (2.0, 1.0, 1.0), generator=seeded(0), distance="slice", **kwargs)
    np.testing.assert_array_equal(default, in_3d)
    np.testing.assert_array_equal(in_3d[0], per_slice[0])  # slice 0 is empty: the same conditions, the same image
    assert not np.array_equal(in_3d[1], per_slice[1])  # a cap slice: distances up to 0.5 (3D) instead of 1 (2D)


def test_only_deterministic_samplers_are_accepted(tiny_pipe):
    check_deterministic_sampler(tiny_pipe.scheduler)  # DDIM, eta = 0
    config = tiny_pipe.scheduler.config
    check_deterministic_sampler(DPMSolverMultistepScheduler.from_config(config))
    for stochastic in (DDPMScheduler.from_config(config),
                       DPMSolverMultistepScheduler.from_config(config, algorithm_type="sde-dpmsolver++")):
        with pytest.raises(CellcascadeError, match="deterministic"):
            check_deterministic_sampler(stochastic)
    # DDIM as the pipeline calls it (no eta, no generator) really is deterministic
    scheduler = tiny_pipe.scheduler
    scheduler.set_timesteps(3)
    sample, eps = torch.randn(1, 1, 8, 8, generator=seeded(1)), torch.randn(1, 1, 8, 8, generator=seeded(2))
    t = scheduler.timesteps[0]
    assert torch.equal(scheduler.step(eps, t, sample).prev_sample, scheduler.step(eps, t, sample).prev_sample)


# --- axial finish -----------------------------------------------------------------------------------------------


def test_volume_psf_sigmas_and_axial_blur():
    assert volume_psf_sigmas(1.0, None, (2.0, 0.5, 0.5)) == (0.75, 1.0, 1.0)
    assert volume_psf_sigmas(1.2, 0.9, (2.0, 0.5, 0.5)) == (0.9, 1.2, 1.2)  # a fitted axial sigma is kept
    assert volume_psf_sigmas(1.0, None, (1.0, 1.0, 2.0), axial_ratio=2.0) == (2.0, 1.0, 0.5)
    with pytest.raises(CellcascadeError, match="spacing"):
        volume_psf_sigmas(1.0, None, (0, 1, 1))
    model = ImagingModel(dtype="float32", psf_sigma=1.0)
    point = np.zeros((41, 21, 21), np.float32)
    point[20, 10, 10] = 1
    blurred = model.blur_volume(point, (0.5, 1.0, 1.0))  # sigma_z = 3 · 1 · 1 / 0.5 = 6 slices
    profile_z, profile_x = blurred[:, 10, 10], blurred[20, 10, :]
    z = np.arange(41) - 20
    assert np.sqrt((profile_z * z**2).sum() / profile_z.sum()) == pytest.approx(6, rel=0.05)
    assert np.sqrt((profile_x * z[10:31] ** 2).sum() / profile_x.sum()) == pytest.approx(1.0, rel=0.05)
    only_z = model.blur_volume(point, (0.5, 1.0, 1.0), lateral=False)
    assert only_z[:, 10, 10].sum() == pytest.approx(1, rel=1e-3) and (only_z[:, 10, 9] == 0).all()


def test_missing_axial_sigma():
    model = ImagingModel(psf_sigma=1.0)
    assert missing_axial_sigma(model, (1.0, 1.0, 1.0), axial_ratio=3.0) == pytest.approx(np.sqrt(8))
    assert missing_axial_sigma(model, (2.0, 0.5, 0.5), axial_ratio=3.0) == pytest.approx(np.sqrt(8) * 0.5 / 2.0)
    assert missing_axial_sigma(model, (1.0, 1.0, 1.0), axial_ratio=1.0) == 0  # nothing missing
    assert missing_axial_sigma(model, (1.0, 1.0, 1.0)) == 0  # 2D-fitted model, no ratio given: no axial PSF known
    fitted = ImagingModel(psf_sigma=1.0, psf_sigma_z=2.0)  # fitted on 3D data: 2 slices of dz = 1.5 → 3 units
    assert missing_axial_sigma(fitted, (1.5, 1.0, 1.0)) == pytest.approx(np.sqrt(9 - 1) / 1.5)


def test_finish_volume_smooths_along_z_and_restores_the_noise():
    labels = np.zeros((12, 48, 48), np.int32)
    labels[:, 10:38, 10:38] = 1
    # a laterally smooth texture drawn independently in every slice: stripes in XZ
    texture = np.stack([ndi.gaussian_filter(np.random.default_rng(z).normal(0, 60, (48, 48)), 2) for z in range(12)])
    clean = (100.0 + (200.0 + texture) * (labels > 0)).astype(np.float32)
    imaging = ImagingModel(dtype="uint16", background_level=100, psf_sigma=1.0, noise_gain=0.0, noise_offset=25.0)
    out = finish_volume(clean, imaging, (1.0, 1.0, 1.0), rng=0, axial_ratio=3.0)
    assert out.shape == labels.shape and out.dtype == np.uint16
    raw = finish_volume(clean, imaging, (1.0, 1.0, 1.0), rng=0, axial_blur=False)
    np.testing.assert_array_equal(raw, finish_volume(clean, imaging, (1.0, 1.0, 1.0), rng=0))  # none known
    fitted = ImagingModel(dtype="uint16", background_level=100, psf_sigma=1.0, psf_sigma_z=3.0, noise_offset=25.0)
    np.testing.assert_array_equal(out, finish_volume(clean, fitted, (1.0, 1.0, 1.0), rng=0))  # 3 = 3 · 1
    assert stripe_score(raw, labels, (1, 1, 1)) > 2
    assert stripe_score(out, labels, (1, 1, 1)) < 0.5 * stripe_score(raw, labels, (1, 1, 1))
    assert adjacent_slice_correlation(out, labels) > adjacent_slice_correlation(raw, labels) + 0.3
    assert out[:, :5, :5].astype(float).std() == pytest.approx(5, rel=0.2)  # the missing noise (std 5) is added
    np.testing.assert_array_equal(out, finish_volume(clean, imaging, (1, 1, 1), rng=0, axial_ratio=3.0))
    assert np.array_equal(smooth_along_z(clean, 0), clean)
    assert adjacent_slice_correlation(smooth_along_z(clean, 2.0), labels) > adjacent_slice_correlation(clean, labels)
    with pytest.raises(CellcascadeError, match="3D"):
        finish_volume(clean[0], imaging, (1, 1, 1))
    with pytest.raises(CellcascadeError, match="sigma"):
        smooth_along_z(clean, -1)


# --- continuity metrics -----------------------------------------------------------------------------------------


def block_labels(shape=(10, 40, 40)) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    labels[1:-1, 4:20, 4:36] = 1
    labels[1:-1, 22:36, 4:36] = 2
    return labels


def test_adjacent_slice_correlation_known_answers():
    rng = np.random.default_rng(0)
    labels = block_labels()
    texture = rng.normal(size=labels.shape[1:])
    assert adjacent_slice_correlation(np.stack([texture] * 10), labels) == pytest.approx(1.0)
    independent = rng.normal(size=labels.shape)
    assert abs(adjacent_slice_correlation(independent, labels)) < 0.1
    # two cells of different brightness with unrelated textures: correlated as a whole, not within each cell
    bright = independent + 5.0 * (labels == 2)
    assert adjacent_slice_correlation(bright, labels) > 0.8
    assert abs(adjacent_slice_correlation(bright, labels, within_cell=True)) < 0.1
    # AR(1) along z with rho 0.6 → correlation 0.6
    ar = np.empty(labels.shape)
    ar[0] = rng.normal(size=labels.shape[1:])
    for z in range(1, 10):
        ar[z] = 0.6 * ar[z - 1] + 0.8 * rng.normal(size=labels.shape[1:])
    assert adjacent_slice_correlation(ar, labels) == pytest.approx(0.6, abs=0.05)
    assert slice_pair_correlations(ar, labels).shape == (7,)  # pairs (1,2)…(7,8) share cell pixels


def smooth_field(shape, sigma, seed=0) -> np.ndarray:
    return ndi.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma, mode="wrap")


def test_stripe_score_known_answers():
    labels = block_labels((16, 40, 40))
    field = smooth_field(labels.shape, 2.0)
    assert stripe_score(field, labels, (1, 1, 1)) == pytest.approx(1.0, abs=0.25)  # isotropic
    offsets = np.random.default_rng(1).normal(0, field.std(), (16, 1, 1))
    assert stripe_score(field + offsets, labels, (1, 1, 1)) > 2  # per-slice brightness jumps: stripes
    stack = np.stack([smooth_field(labels.shape[1:], 2.0, seed=z) for z in range(16)])
    assert stripe_score(stack, labels, (1, 1, 1)) > 3  # slices textured independently
    assert stripe_score(ndi.gaussian_filter1d(field, 3, axis=0), labels, (1, 1, 1)) < 0.5  # axial blur
    # anisotropy: an isotropic field sampled every 2nd z-plane is isotropic at spacing (2, 1, 1)
    fine = smooth_field((32, 40, 40), 2.0, seed=2)
    coarse = fine[::2]
    assert stripe_score(coarse, labels, (2, 1, 1)) == pytest.approx(1.0, abs=0.25)
    assert stripe_score(coarse, labels, (1, 1, 1)) > 1.5  # the same data read as isotropic voxels looks stripy
    # a non-integer lag (1.5 px) sits between lags 1 and 2
    s1, s15, s2 = (stripe_score(coarse, labels, (d, 1, 1)) for d in (1.0, 1.5, 2.0))
    assert s1 > s15 > s2
    assert set(continuity_scores(coarse, labels, (2, 1, 1))) == {"adjacent_corr", "adjacent_corr_within_cell", "stripe"}


def test_continuity_metrics_reject_bad_input():
    labels = block_labels()
    volume = np.zeros(labels.shape)
    with pytest.raises(CellcascadeError, match="one shape"):
        adjacent_slice_correlation(volume[:, :10], labels)
    with pytest.raises(CellcascadeError, match="integer"):
        stripe_score(volume, labels.astype(float), (1, 1, 1))
    with pytest.raises(CellcascadeError, match="2 z-slices"):
        adjacent_slice_correlation(volume[:1], labels[:1])
    with pytest.raises(CellcascadeError, match="no pair"):
        adjacent_slice_correlation(volume, np.zeros_like(labels))
    with pytest.raises(CellcascadeError, match="spacing"):
        stripe_score(volume, labels, (1, 1))
    with pytest.raises(CellcascadeError, match="NaN"):
        stripe_score(np.full(labels.shape, np.nan), labels, (1, 1, 1))
    with pytest.raises(CellcascadeError, match="narrower"):
        stripe_score(np.random.default_rng(0).normal(size=labels.shape), labels, (100, 1, 1))
