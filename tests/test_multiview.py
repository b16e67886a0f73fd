import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from cellcascade.data import AnnotatedImage
from cellcascade.errors import CellcascadeError
from cellcascade.models.multiview import CrossViewAttnProcessor, MultiviewUNet, build_multiview_unet
from cellcascade.pipelines.multiview import MultiviewPipeline, load_multiview_pipeline, top_view
from cellcascade.reconstruction import Views, render_silhouettes, ring_views
from cellcascade.training.loop import TrainConfig
from cellcascade.training.mask import NOISE_SCHEDULE
from cellcascade.training.multiview import (
    MultiviewDataConfig,
    build_training_set,
    cell_masks,
    render_pair,
    train_multiview_model,
)
from conftest import ellipse_labels

torch.set_num_threads(1)
SIDE = ring_views(4, top=False)
TINY_DATA = MultiviewDataConfig(size=16, n_side=4, shapes_per_mask=2, axial_ratio=(0.6, 1.0))


def tiny_unet(cross_view: bool = True, seed: int = 0) -> MultiviewUNet:
    torch.manual_seed(seed)
    return build_multiview_unet(16, SIDE, preset="tiny", cross_view_attention=cross_view)


def tiny_pipeline(margin: float = 1.3) -> MultiviewPipeline:
    return MultiviewPipeline(tiny_unet(), DDIMScheduler(**NOISE_SCHEDULE), margin=margin)


def disc(radius: float, shape=(21, 21), centre=None) -> np.ndarray:
    centre = (np.array(shape) - 1) / 2 if centre is None else np.asarray(centre)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


def ellipsoid(shape, semi_axes, centre=None) -> np.ndarray:
    """bool (Z, Y, X) ellipsoid with semi-axes (a_z, a_y, a_x) in voxels."""
    centre = (np.array(shape) - 1) / 2 if centre is None else np.asarray(centre)
    grid = np.mgrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, semi_axes)) <= 1


def items_2d(n_images: int = 2) -> list[AnnotatedImage]:
    items = []
    for i in range(n_images):
        labels = ellipse_labels((64, 64), n=4, seed=i)
        items.append(AnnotatedImage((labels > 0).astype(np.float32), labels, f"img{i}"))
    return items


def test_model_output_shape_and_input_check():
    unet = tiny_unet()
    out = unet(torch.randn(2, 5, 16, 16), torch.tensor([3, 900])).sample
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()
    assert unet(torch.randn(1, 5, 16, 16), 10).sample.shape == (1, 4, 16, 16)  # scalar timestep
    with pytest.raises(CellcascadeError, match=r"\(B, 5, S, S\)"):
        unet(torch.randn(2, 4, 16, 16), 1)


@pytest.mark.parametrize("azimuth", [0.0, 30.0, 90.0, 157.5])
def test_chord_profile_of_a_centred_disc_is_its_chord_length(azimuth):
    unet = build_multiview_unet(32, Views((0.0,), (azimuth,)), preset="tiny", view_chords=True)
    centres = (2 * np.arange(32) + 1) / 32 - 1
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    top = torch.from_numpy(np.where(np.hypot(yy, xx) <= 0.6, 1.0, -1.0)[None, None].astype(np.float32))
    profile = unet.chord_profiles(top)[0, 0]
    assert torch.equal(profile, profile[:1].expand(32, 32))  # the same in every row
    length = (profile[0] + 1).numpy()
    expected = 2 * np.sqrt(np.clip(0.36 - centres**2, 0, None))  # the disc's chord at each column's centre
    assert np.abs(length - expected)[np.abs(centres) < 0.5].max() < 0.1
    assert np.all(length[np.abs(centres) > 0.65] == 0)  # columns the disc does not reach: -1


def test_every_side_view_lies_inside_its_chord_profile():
    """A side view's column can hold cell only where the top view's line along the rays meets the mask."""
    unet = build_multiview_unet(32, ring_views(8, top=False), preset="tiny", view_chords=True)
    cell = ellipsoid((13, 25, 25), (5.0, 10.0, 4.5), centre=(6.0, 11.5, 13.0))
    for rotation in (0.0, 35.0, 100.0):
        top, side = render_pair(cell, unet.views, (1.5, 1.0, 1.0), 32, 1.3, rotation=rotation)
        profile = unet.chord_profiles(torch.from_numpy(top[None, None] * 2.0 - 1))[0, :, 0].numpy()
        occupied = side.any(axis=1)  # (K, S) columns with cell
        assert occupied.sum() > 50 and not np.any(occupied & (profile == -1))
        assert np.count_nonzero((profile > -1) & ~occupied) <= 2 * len(side)  # at most a sub-pixel rim per side


def test_chord_model_takes_its_third_channel_and_round_trips(tmp_path):
    torch.manual_seed(0)
    unet = build_multiview_unet(16, SIDE, preset="tiny", view_chords=True)
    assert unet.unet.config.in_channels == 3 and tiny_unet().unet.config.in_channels == 2
    x = torch.randn(2, 5, 16, 16)
    moved = x.clone()
    moved[:, 4] = torch.roll(x[:, 4], 3, dims=-1)  # another top view: other chords and another condition
    with torch.no_grad():
        assert not torch.allclose(unet(x, 7).sample, unet(moved, 7).sample)
    unet.save_pretrained(tmp_path / "unet")
    again = MultiviewUNet.from_pretrained(tmp_path / "unet", use_safetensors=True)
    assert again.config.view_chords is True
    with torch.no_grad():
        torch.testing.assert_close(unet(x, 7).sample, again(x, 7).sample)


def test_cross_view_attention_mixes_views_and_nothing_else_does():
    x = torch.randn(1, 5, 16, 16)
    changed = x.clone()
    changed[:, 2] = torch.randn(16, 16)  # the noisy input of view 2 only
    t = torch.tensor([500])
    with torch.no_grad():
        joint, independent = tiny_unet(True), tiny_unet(False)
        a, b = joint(x, t).sample, joint(changed, t).sample
        c, d = independent(x, t).sample, independent(changed, t).sample
    assert not torch.allclose(a[:, 0], b[:, 0], atol=1e-5)  # view 0 sees view 2
    assert torch.equal(c[:, [0, 1, 3]], d[:, [0, 1, 3]])  # without cross-view attention it cannot
    assert not torch.equal(c[:, 2], d[:, 2])


def test_cross_view_processor_with_one_view_is_plain_attention():
    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8, norm_num_groups=4, residual_connection=True, bias=True,
                     upcast_softmax=True, _from_deprecated_attn_block=True)
    x = torch.randn(6, 16, 4, 4)
    attn.set_processor(AttnProcessor2_0())
    plain = attn(x)
    attn.set_processor(CrossViewAttnProcessor(1))
    torch.testing.assert_close(attn(x), plain, rtol=1e-5, atol=1e-5)
    attn.set_processor(CrossViewAttnProcessor(3))
    joint = attn(x)
    assert not torch.allclose(joint, plain, atol=1e-4)
    # Samples do not mix: changing the second sample's three views leaves the first sample's output unchanged.
    y = x.clone()
    y[3:] = torch.randn(3, 16, 4, 4)
    torch.testing.assert_close(attn(y)[:3], joint[:3])
    with pytest.raises(CellcascadeError, match="multiple of 3"):
        attn(torch.randn(4, 16, 4, 4))


@pytest.mark.parametrize("pixel_size", [(1.0, 1.0), (0.7, 1.3)])
def test_top_view_is_the_top_silhouette_of_the_extruded_mask(pixel_size):
    rng = np.random.default_rng(1)
    mask = disc(6.5, (17, 19), centre=(8.2, 9.6)) & (rng.random((17, 19)) > 0.1)
    prism = np.repeat(mask[None], 5, axis=0)
    view = top_view(mask, 32, pixel_size=pixel_size, margin=1.2)
    rendered = render_silhouettes(prism, Views((90.0,), (0.0,)), spacing=(1.0, *pixel_size), size=32,
                                  half_width=view.half_width, centre=(2.0, *view.centre))[0]
    assert view.image.sum() > 100
    assert np.count_nonzero(view.image != (rendered > 0.5)) <= 2  # ties at exactly 1/2 may differ by rounding


def test_rotation_about_z_shifts_the_side_views():
    spacing = (2.0, 1.0, 1.0)
    cell = ellipsoid((9, 21, 21), (3.2, 9.0, 5.0))
    cell[:, :, 10:] &= ellipsoid((9, 21, 21), (3.2, 9.0, 3.0))[:, :, 10:]  # not mirror symmetric in x
    turned = np.rot90(cell, k=-1, axes=(1, 2))  # +90 degrees from +x towards +y, in (y, x) arrays
    top_a, side_a = render_pair(turned, SIDE, spacing, 32, 1.3)
    top_b, side_b = render_pair(cell, SIDE, spacing, 32, 1.3, rotation=90.0)
    assert np.mean(top_a != top_b) < 0.01 and np.mean(side_a != side_b) < 0.01
    _, side_c = render_pair(cell, SIDE, spacing, 32, 1.3)
    assert np.mean(side_a != side_c) > 0.03  # the rotation did change the views


def test_training_set_of_known_shapes():
    sphere = ellipsoid((21, 21, 21), (8, 8, 8))
    flat = ellipsoid((11, 21, 21), (4, 8, 8))
    config = MultiviewDataConfig(size=32, n_side=4, rotations_per_volume=2)
    data = build_training_set([], [sphere, flat], config)
    assert data.side.shape == (4, 4, 32, 32) and data.top.shape == (4, 1, 32, 32)
    assert data.from_3d == 4 and data.from_prior == 0 and data.margin >= 1.15
    assert set(torch.unique(data.side).tolist()) == {-1.0, 1.0}
    area = lambda x: (x > 0).float().sum(dim=(-2, -1))  # noqa: E731
    sphere_ratio = area(data.side[0]) / area(data.top[0])
    flat_ratio = area(data.side[2]) / area(data.top[2])
    assert torch.all((sphere_ratio - 1).abs() < 0.1)  # a sphere looks the same from every side
    assert torch.all((flat_ratio - 0.5).abs() < 0.1)  # half as high as wide


def test_training_set_from_2d_masks_is_deterministic():
    masks = cell_masks(ellipse_labels((64, 64), n=3, seed=0))
    assert len(masks) == 3
    a = build_training_set(masks, [], TINY_DATA)
    b = build_training_set(masks, [], TINY_DATA)
    assert a.side.shape == (6, 4, 16, 16) and a.from_prior == 6
    assert torch.equal(a.side, b.side) and torch.equal(a.top, b.top)


def test_pipeline_shapes_range_and_seed():
    pipe = tiny_pipeline()
    masks = [disc(5.0, (13, 13)), disc(7.0, (20, 17)), disc(3.0, (9, 9)).astype(np.uint8)]
    out = pipe(masks, num_inference_steps=2, generator=torch.Generator().manual_seed(0), batch_size=2)
    again = pipe(masks, num_inference_steps=2, generator=torch.Generator().manual_seed(0), batch_size=2)
    other = pipe(masks, num_inference_steps=2, generator=torch.Generator().manual_seed(1), batch_size=2)
    assert out.silhouettes.shape == (3, 4, 16, 16) and out.silhouettes.dtype == np.float32
    assert out.silhouettes.min() >= 0 and out.silhouettes.max() <= 1
    np.testing.assert_array_equal(out.silhouettes, again.silhouettes)
    assert not np.array_equal(out.silhouettes, other.silhouettes)
    assert out.views == SIDE and out.all_views() == ring_views(4)
    assert out.all_silhouettes().shape == (3, 5, 16, 16)
    np.testing.assert_allclose(out.half_width, [1.3 * top_view(m, 16, margin=1.0).half_width for m in masks])
    np.testing.assert_allclose(out.centre[1], [9.5, 8.0])
    stack = pipe(np.stack([disc(5.0, (13, 13))] * 2), 2, torch.Generator().manual_seed(0))
    assert stack.silhouettes.shape == (2, 4, 16, 16)
    # A pixel size scales the frame physically, not the picture.
    scaled = pipe(masks[:1], 2, torch.Generator().manual_seed(0), pixel_size=(0.5, 0.5))
    np.testing.assert_allclose(scaled.half_width, out.half_width[:1] / 2)
    np.testing.assert_array_equal(scaled.top, out.top[:1])


def test_save_load_round_trip(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "model", safe_serialization=True)
    files = sorted(p.name for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors", "model_index.json", "scheduler_config.json"]
    again = load_multiview_pipeline(tmp_path / "model")
    assert again.config.margin == 1.3 and again.unet.views == pipe.unet.views
    assert again.unet.config.block_out_channels == [8, 16] and again.unet.config.sample_size == 16
    processors = [m.processor for m in again.unet.modules() if isinstance(m, Attention)]
    assert processors and all(isinstance(p, CrossViewAttnProcessor) for p in processors)
    masks = [disc(5.0, (13, 13))]
    a = pipe(masks, 2, torch.Generator().manual_seed(3)).silhouettes
    b = again(masks, 2, torch.Generator().manual_seed(3)).silhouettes
    np.testing.assert_array_equal(a, b)
    pipe.unet.save_pretrained(tmp_path / "unet")
    unet = MultiviewUNet.from_pretrained(tmp_path / "unet", use_safetensors=True)
    for (name, x), (_, y) in zip(pipe.unet.state_dict().items(), unet.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("damage, message", [
    ("pickle", "pickles never"),
    ("foreign_unet", "unexpected components"),
    ("no_weights", "weights missing"),
])
def test_damaged_model_folder_gives_clear_error(tmp_path, damage, message):
    folder = tmp_path / "model"
    tiny_pipeline().save_pretrained(folder, safe_serialization=True)
    if damage == "pickle":
        (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    elif damage == "foreign_unet":
        index = json.loads((folder / "model_index.json").read_text())
        index["unet"] = ["diffusers", "UNet2DModel"]
        (folder / "model_index.json").write_text(json.dumps(index))
    else:
        (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CellcascadeError, match=message):
        load_multiview_pipeline(folder)


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    items = items_2d()
    config = TrainConfig(steps=24, batch_size=4, learning_rate=2e-3, warmup_steps=1, checkpoint_every=100)
    kwargs = dict(data=TINY_DATA, preset="tiny", config=config, device="cpu", progress=False)
    straight = train_multiview_model(items, tmp_path / "a", **kwargs)
    record = json.loads((tmp_path / "a" / "training.json").read_text())
    assert record["from_prior"] == 2 * record["cells_2d"] and record["cells_2d"] >= 6
    assert record["final_loss"] < 0.8 * record["initial_loss"]
    assert train_multiview_model(items, tmp_path / "b", stop_after=12, **kwargs) is None
    assert not (tmp_path / "b").exists() and (tmp_path / "b.checkpoint" / "checkpoint" / "state.json").exists()
    resumed = train_multiview_model(items, tmp_path / "b", **kwargs)
    assert not (tmp_path / "b.checkpoint").exists()
    for (name, x), (_, y) in zip(straight.unet.state_dict().items(), resumed.unet.state_dict().items()):
        assert torch.equal(x, y), name
    again = load_multiview_pipeline(tmp_path / "b")
    out = again([items[0].labels == 1], 2, torch.Generator().manual_seed(0))
    assert out.silhouettes.shape == (1, 4, 16, 16) and again.config.margin == pytest.approx(record["margin"])


def test_bad_inputs_give_clear_errors(tmp_path):
    pipe = tiny_pipeline()
    mask = disc(5.0, (13, 13))
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(CellcascadeError, match="wrap a single mask"):
        pipe(mask, 2, generator)
    with pytest.raises(CellcascadeError, match="mask 1 is empty"):
        pipe([mask, np.zeros((5, 5), bool)], 2, generator)
    with pytest.raises(CellcascadeError, match="bool or integer"):
        pipe([mask.astype(np.float32)], 2, generator)
    with pytest.raises(CellcascadeError, match="2D"):
        pipe([np.ones((3, 4, 4), bool)], 2, generator)
    with pytest.raises(CellcascadeError, match="no masks"):
        pipe([], 2, generator)
    with pytest.raises(CellcascadeError, match="sampling steps"):
        pipe([mask], 0, generator)
    with pytest.raises(CellcascadeError, match="pixel_size"):
        pipe([mask], 2, generator, pixel_size=(1.0, -1.0))
    with pytest.raises(CellcascadeError, match="sampler"):
        pipe.use_sampler("euler-magic")
    with pytest.raises(CellcascadeError, match="top view"):
        build_multiview_unet(16, ring_views(4), preset="tiny")  # the top view is the condition, not an output
    with pytest.raises(CellcascadeError, match="divisible"):
        build_multiview_unet(18, SIDE, preset="cpu")
    with pytest.raises(CellcascadeError, match="preset"):
        build_multiview_unet(16, SIDE, preset="huge")
    with pytest.raises(CellcascadeError, match="no training cells"):
        build_training_set([], [], TINY_DATA)
    with pytest.raises(CellcascadeError, match="non-empty"):
        build_training_set([], [np.zeros((3, 3, 3), bool)], TINY_DATA)
    with pytest.raises(CellcascadeError, match="margin"):
        top_view(mask, 16, margin=0.5)


def test_training_refuses_existing_output_and_changed_data_options(tmp_path):
    items = items_2d(1)
    config = TrainConfig(steps=4, batch_size=2, checkpoint_every=2)
    kwargs = dict(preset="tiny", config=config, device="cpu", progress=False)
    (tmp_path / "done").mkdir()
    with pytest.raises(CellcascadeError, match="already exists"):
        train_multiview_model(items, tmp_path / "done", data=TINY_DATA, **kwargs)
    train_multiview_model(items, tmp_path / "m", data=TINY_DATA, stop_after=2, **kwargs)
    changed = MultiviewDataConfig(size=16, n_side=4, shapes_per_mask=2, axial_ratio=0.5)
    with pytest.raises(CellcascadeError, match="other data options"):
        train_multiview_model(items, tmp_path / "m", data=changed, **kwargs)
    with pytest.raises(CellcascadeError, match="no whole annotated cells"):
        labels = np.zeros((20, 20), np.int32)
        labels[:5, :5] = 1  # touches the border: left out
        train_multiview_model([AnnotatedImage(labels.astype(float), labels, "cut")], tmp_path / "n",
                              data=TINY_DATA, **kwargs)
    shutil.rmtree(tmp_path / "m.checkpoint")


def test_denoising_target_follows_the_prediction_type():
    from diffusers import DDPMScheduler

    from cellcascade.training.loop import denoising_target

    clean, noise = torch.rand(2, 3, 4, 4) * 2 - 1, torch.randn(2, 3, 4, 4)
    timesteps = torch.tensor([10, 900])
    for kind, expected in [("epsilon", noise), ("sample", clean)]:
        scheduler = DDPMScheduler(**{**NOISE_SCHEDULE, "prediction_type": kind})
        assert torch.equal(denoising_target(scheduler, clean, noise, timesteps), expected)
    velocity = DDPMScheduler(**{**NOISE_SCHEDULE, "prediction_type": "v_prediction"})
    alpha = velocity.alphas_cumprod[timesteps].sqrt().view(-1, 1, 1, 1)
    sigma = (1 - velocity.alphas_cumprod[timesteps]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(denoising_target(velocity, clean, noise, timesteps), alpha * noise - sigma * clean, atol=1e-6)


def test_x0_model_trains_saves_its_prediction_type_and_samples_what_it_predicts(tmp_path, monkeypatch):
    items = items_2d()
    config = TrainConfig(steps=24, batch_size=4, learning_rate=2e-3, warmup_steps=1, checkpoint_every=100)
    with pytest.raises(CellcascadeError, match="prediction type"):
        train_multiview_model(items, tmp_path / "bad", data=TINY_DATA, preset="tiny", config=config,
                              prediction_type="v_prediction", progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.checkpoint").exists()
    train_multiview_model(items, tmp_path / "x0", data=TINY_DATA, preset="tiny", config=config,
                          prediction_type="sample", device="cpu", progress=False)
    record = json.loads((tmp_path / "x0" / "training.json").read_text())
    assert record["prediction_type"] == "sample" and record["final_loss"] < 0.8 * record["initial_loss"]
    pipe = load_multiview_pipeline(tmp_path / "x0")
    assert pipe.scheduler.config.prediction_type == "sample"
    # An oracle network that always predicts the same clean views: a deterministic x0 sampler must end on them,
    # which holds only if the sampler reads the output as x0 (read as noise, it would end elsewhere).
    views = torch.from_numpy(np.where(disc(5.0, (16, 16)), 0.9, -0.9).astype(np.float32))[None, None].repeat(1, 4, 1, 1)
    monkeypatch.setattr(pipe.unet, "forward", lambda x, t: type("Out", (), {"sample": views.expand(x.shape[0], -1, -1, -1)}))
    out = pipe.denoise(torch.ones(2, 1, 16, 16), 5, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(out, views.expand(2, -1, -1, -1).numpy(), atol=1e-5)
