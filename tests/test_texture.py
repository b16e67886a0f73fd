import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from cellcascade.data import AnnotatedImage, load_sample
from cellcascade.errors import CellcascadeError
from cellcascade.models.conditions import CONDITION_NAMES, cell_boundaries, label_conditions, normalized_distance
from cellcascade.models.unet import build_unet
from cellcascade.pipelines.texture import (
    TexturePipeline,
    blend_window,
    from_unit,
    load_texture_pipeline,
    tile_starts,
    tiled_denoise,
    to_unit,
)
from cellcascade.training.loop import TrainConfig
from cellcascade.training.mask import NOISE_SCHEDULE
from cellcascade.training.texture import known_pixels, texture_patches, train_texture_model

TINY = dict(patch_size=16, preset="tiny", num_patches=64, device="cpu", progress=False)


@pytest.fixture(scope="module")
def tiny_texture_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("texture") / "tiny"
    train_texture_model(load_sample(), out, config=TrainConfig(steps=2, batch_size=4), **TINY)
    return out


def sparse_item():
    """Background 10 with noise, an annotated bright square and an unannotated bright square far from it."""
    rng = np.random.default_rng(0)
    image = 10 + rng.normal(0, 1, (48, 80))
    image[6:18, 6:18] += 90
    image[26:40, 50:66] += 90
    labels = np.zeros((48, 80), np.int32)
    labels[6:18, 6:18] = 3
    return AnnotatedImage(image.astype(np.float32), labels, "sparse", dense=False)


# --- conditions -------------------------------------------------------------------------------------------------


def test_two_touching_squares_get_a_boundary_between_them():
    labels = np.zeros((10, 12), np.int32)
    labels[2:8, 2:6] = 1
    labels[2:8, 6:10] = 2
    c = label_conditions(labels)
    assert c.shape == (len(CONDITION_NAMES), 10, 12) and c.dtype == np.float32
    np.testing.assert_array_equal(c[0], labels > 0)
    boundary = cell_boundaries(labels)
    assert boundary[3:7, 5].all() and boundary[3:7, 6].all()  # the contact line, on both sides
    assert not boundary[3:7, 3:5].any() and not boundary[3:7, 7:9].any()  # interiors
    assert not boundary[labels == 0].any()
    # the distance channel sees the neighbour as a border too: 1 at each cell's centre, lowest at the contact
    d = normalized_distance(labels)
    assert d[labels == 1].max() == 1 and d[labels == 2].max() == 1 and (d[labels == 0] == 0).all()
    assert d[4, 5] < d[4, 4] and d[4, 6] < d[4, 7]


def test_conditions_are_dimension_agnostic_and_check_their_input():
    labels = np.zeros((6, 8, 8), np.int32)
    labels[1:5, 2:6, 2:6] = 1
    c = label_conditions(labels)
    assert c.shape == (3, 6, 8, 8)
    assert c[2, 2:4, 3:5, 3:5].min() == 1 and c[1, 1].sum() == 16  # centre and top face
    with pytest.raises(CellcascadeError, match="integer"):
        label_conditions(labels.astype(np.float32))
    with pytest.raises(CellcascadeError, match="2D"):
        label_conditions(np.zeros(5, np.int32))


# --- training data ----------------------------------------------------------------------------------------------


def test_loss_weights_skip_unannotated_blobs_of_a_sparse_image():
    item = sparse_item()
    known = known_pixels(item, margin=3, guard=6)
    assert known[item.labels > 0].all()  # annotated cell
    assert not known[26:40, 50:66].any()  # the unannotated bright blob ...
    assert not known[22, 58] and not known[43, 58]  # ... and its guard zone
    assert known[20, 12] and known[6:18, 3].all()  # margin around the annotated cell
    assert known[2:46, 30].all() and known[45, 2]  # dark background far from the blob
    dense = AnnotatedImage(item.image, item.labels, "dense", dense=True)
    assert known_pixels(dense).all()  # dense: label 0 is background


def test_patches_are_normalised_and_weighted():
    item = sparse_item()
    patches = texture_patches([item], patch_size=16, num_patches=40, centred_fraction=0.5, seed=1)
    assert patches.images.shape == (40, 1, 16, 16) and patches.conditions.shape == (40, 3, 16, 16)
    assert patches.weights.shape == (40, 1, 16, 16)
    assert patches.images.min() >= -1 and patches.images.max() <= 1
    assert patches.intensity_low < 11 and patches.intensity_high > 95
    # where the weight is 1 and the condition says background, the image is dark (never the unannotated blob)
    background = (patches.weights[:, 0] == 1) & (patches.conditions[:, 0] == 0)
    assert patches.images[:, 0][background].max() < to_unit(np.array(40.0), patches.intensity_low, patches.intensity_high)
    centred = texture_patches([item], patch_size=16, num_patches=10, centred_fraction=1.0, seed=2)
    assert (centred.conditions[:, 0].sum(dim=(1, 2)) > 0).all()  # every patch holds the annotated cell
    again = texture_patches([item], patch_size=16, num_patches=40, centred_fraction=0.5, seed=1)
    assert torch.equal(patches.images, again.images)


def test_small_images_are_padded_with_unknown_pixels():
    labels = np.zeros((10, 12), np.int32)
    labels[3:7, 3:8] = 1
    item = AnnotatedImage((labels * 50 + 5).astype(np.uint8), labels, "small", dense=True)
    patches = texture_patches([item], patch_size=16, num_patches=3)
    assert patches.images.shape == (3, 1, 16, 16)
    assert patches.weights[0, 0].sum() == 120 and (patches.weights[:, 0, 10:] == 0).all()


def test_intensity_mapping_round_trips():
    x = np.array([0.0, 5.0, 10.0], np.float32)
    np.testing.assert_allclose(to_unit(x, 0, 10), [-1, 0, 1])
    np.testing.assert_allclose(from_unit(to_unit(x, 0, 10), 0, 10), x, atol=1e-6)


# --- tiling -----------------------------------------------------------------------------------------------------


def test_tiles_cover_the_canvas_with_overlap():
    assert tile_starts(256, 64, 16) == [0, 48, 96, 144, 192]
    assert tile_starts(64, 64, 16) == [0] and tile_starts(10, 64, 16) == [0]
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 68 and all(b - a <= 24 for a, b in zip(starts, starts[1:]))
    window = blend_window(16, 4)
    assert window.shape == (16, 16) and window[8, 8] == 1 and 0 < window[0, 0] < window[0, 8] < 1


def test_tiled_denoising_of_a_pointwise_model_equals_untiled():
    """With a denoiser that looks at each pixel alone, blending overlapping tiles must give the untiled result."""
    scheduler = DDIMScheduler(**NOISE_SCHEDULE)
    conditions = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(0))

    def predict(x, cond, t):
        return 0.5 * x + cond[:, :1]

    def run(tile):
        return tiled_denoise(predict, conditions, 1, scheduler, 3, torch.Generator().manual_seed(1), tile=tile, overlap=tile // 4)

    whole, tiled = run(56), run(16)
    assert tiled.shape == (1, 40, 56)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


# --- model ------------------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_same_seed_give_identical_images(tiny_texture_model, tmp_path):
    pipe = load_texture_pipeline(tiny_texture_model)
    assert pipe.unet.config.sample_size == 16 and pipe.unet.config.in_channels == 4
    assert pipe.config.intensity_high > pipe.config.intensity_low
    pipe.save_pretrained(tmp_path / "copy", safe_serialization=True)
    again = load_texture_pipeline(tmp_path / "copy")
    labels = load_sample()[0].labels[:24, :24]
    a = pipe(labels, 2, generator=torch.Generator().manual_seed(3)).image
    b = again(labels, 2, generator=torch.Generator().manual_seed(3)).image
    c = again(labels, 2, generator=torch.Generator().manual_seed(4)).image
    assert a.shape == (24, 24) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= pipe.config.intensity_low and a.max() <= pipe.config.intensity_high


@pytest.mark.parametrize("shape", [(40, 56), (9, 5), (16, 16)])
def test_any_canvas_size_works(tiny_texture_model, shape):
    pipe = load_texture_pipeline(tiny_texture_model)
    pipe.use_sampler("dpm")
    labels = np.zeros(shape, np.int32)
    labels[2 : shape[0] // 2, 1 : shape[1] // 2] = 5
    out = pipe(labels, 2, generator=torch.Generator().manual_seed(0), batch_size=3)
    assert out.image.shape == shape and np.isfinite(out.image).all()


def test_given_initial_noise_replaces_the_generator(tiny_texture_model):
    pipe = load_texture_pipeline(tiny_texture_model)
    labels = load_sample()[0].labels[:20, :30]
    noise = np.random.default_rng(0).standard_normal((20, 30)).astype(np.float32)
    a = pipe(labels, 2, generator=torch.Generator().manual_seed(1), noise=noise).image
    b = pipe(labels, 2, generator=torch.Generator().manual_seed(2), noise=noise).image
    c = pipe(labels, 2, generator=torch.Generator().manual_seed(1)).image
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(CellcascadeError, match="noise must have shape"):
        pipe(labels, 2, noise=noise[:10])


def test_given_conditions_replace_those_of_the_labels(tiny_texture_model):
    pipe = load_texture_pipeline(tiny_texture_model)
    labels = np.zeros((20, 30), np.int32)
    labels[4:16, 6:20] = 1
    own = label_conditions(labels)
    a = pipe(labels, 2, generator=torch.Generator().manual_seed(1)).image
    b = pipe(labels, 2, generator=torch.Generator().manual_seed(1), conditions=own).image
    dimmed = own.copy()
    dimmed[2] *= 0.5
    c = pipe(labels, 2, generator=torch.Generator().manual_seed(1), conditions=dimmed).image
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(CellcascadeError, match="conditions must have shape"):
        pipe(labels, 2, conditions=own[:, :10])


def test_bad_inputs_give_clear_errors(tiny_texture_model):
    pipe = load_texture_pipeline(tiny_texture_model)
    with pytest.raises(CellcascadeError, match="2D"):
        pipe(np.zeros((2, 8, 8), np.int32))
    with pytest.raises(CellcascadeError, match="integer"):
        pipe(np.zeros((8, 8), np.float32))
    with pytest.raises(CellcascadeError, match="positive"):
        pipe(np.zeros((8, 8), np.int32), num_inference_steps=0)
    with pytest.raises(CellcascadeError, match="sampler"):
        pipe.use_sampler("magic")
    with pytest.raises(CellcascadeError, match="channels"):
        TexturePipeline(build_unet(16, 1, 1, preset="tiny"), DDIMScheduler())
    with pytest.raises(CellcascadeError, match="range"):
        TexturePipeline(pipe.unet, DDIMScheduler(), intensity_low=5, intensity_high=5)


def test_foreign_or_damaged_folders_are_refused(tiny_texture_model, tiny_mask_model, tmp_path):
    with pytest.raises(CellcascadeError, match="not a 'TexturePipeline'"):
        load_texture_pipeline(tiny_mask_model)
    shutil.copytree(tiny_texture_model, tmp_path / "damaged")
    (tmp_path / "damaged" / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CellcascadeError, match="pickles never"):
        load_texture_pipeline(tmp_path / "damaged")
    with pytest.raises(CellcascadeError, match="not found"):
        load_texture_pipeline(tmp_path / "nothing")


def test_bad_training_options(tmp_path):
    items = load_sample()
    with pytest.raises(CellcascadeError, match="divisible"):
        train_texture_model(items, tmp_path / "x", patch_size=30, preset="cpu")
    with pytest.raises(CellcascadeError, match="preset"):
        train_texture_model(items, tmp_path / "x", patch_size=32, preset="huge")
    (tmp_path / "exists").mkdir()
    with pytest.raises(CellcascadeError, match="already exists"):
        train_texture_model(items, tmp_path / "exists", **TINY)


def test_texture_model_predicts_velocity(tiny_texture_model):
    pipe = load_texture_pipeline(tiny_texture_model)
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_resumed_training_equals_uninterrupted(tmp_path):
    items = load_sample()
    config = TrainConfig(steps=4, batch_size=4, checkpoint_every=2)
    assert train_texture_model(items, tmp_path / "a", config=config, stop_after=2, **TINY) is None
    assert not (tmp_path / "a").exists() and (tmp_path / "a.checkpoint" / "checkpoint" / "state.json").exists()
    resumed = train_texture_model(items, tmp_path / "a", config=config, **TINY)
    straight = train_texture_model(items, tmp_path / "b", config=config, **TINY)
    assert not (tmp_path / "a.checkpoint").exists()
    for (name, x), (_, y) in zip(resumed.unet.state_dict().items(), straight.unet.state_dict().items()):
        assert torch.equal(x, y), name
    labels = items[0].labels[:20, :20]
    np.testing.assert_array_equal(resumed(labels, 2, generator=torch.Generator().manual_seed(0)).image,
                                  straight(labels, 2, generator=torch.Generator().manual_seed(0)).image)
