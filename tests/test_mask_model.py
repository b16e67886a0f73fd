import shutil

import numpy as np
import pytest
import torch

from cellcascade.data import load_sample
from cellcascade.errors import CellcascadeError
from cellcascade.models.unet import build_unet
from cellcascade.pipelines.mask import clean_mask, load_mask_pipeline, solidity
from cellcascade.training.loop import TrainConfig
from cellcascade.training.mask import train_mask_model


def test_build_unet_shapes():
    unet = build_unet(16, in_channels=3, out_channels=1, preset="tiny")
    out = unet(torch.zeros(2, 3, 16, 16), torch.tensor([1, 500])).sample
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


def test_clean_mask_keeps_largest_component_and_fills_holes():
    soft = -np.ones((16, 16), np.float32)
    soft[3:11, 3:11] = 1
    soft[6, 6] = -1  # a hole
    soft[13, 13] = 1  # a speck
    mask = clean_mask(soft, min_area=4)
    assert mask.sum() == 64 and mask[6, 6] and not mask[13, 13]
    assert clean_mask(soft, min_area=100) is None  # too small
    soft[0, 3:11] = 1
    soft[1:3, 3:11] = 1
    assert clean_mask(soft, min_area=4) is None  # touches the crop border


def _disc(radius: float, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return yy**2 + xx**2 <= radius**2


def _tailed_disc() -> np.ndarray:
    """A disc of radius 6 with a thin tail out to the left, as an undertrained mask model draws."""
    tailed = _disc(6)
    tailed[15:17, 1:16] = True
    return tailed


def test_clean_mask_rejects_shapes_less_convex_than_min_solidity():
    disc, tailed = _disc(6), _tailed_disc()
    assert solidity(disc) > 0.9 and solidity(tailed) < 0.8
    soft = lambda m: np.where(m, 1.0, -1.0).astype(np.float32)  # noqa: E731
    assert clean_mask(soft(tailed), min_area=4) is not None  # default: every shape kept
    assert clean_mask(soft(tailed), min_area=4, min_solidity=0.85) is None
    np.testing.assert_array_equal(clean_mask(soft(disc), min_area=4, min_solidity=0.85), disc)


def test_sampled_masks_respect_min_solidity(tiny_mask_model):
    pipe = load_mask_pipeline(tiny_mask_model)
    assert pipe.config.min_solidity == 0  # the default: every shape kept
    disc, tailed = _disc(6), _tailed_disc()
    draws = iter([np.stack([tailed, disc]), np.stack([tailed]), np.stack([_disc(7)])])  # batches the sampler asks for
    pipe.denoise = lambda n, steps, generator: np.where(next(draws)[:n], 1.0, -1.0).astype(np.float32)
    pipe.register_to_config(smoothing=0.0, threshold=0.0, min_solidity=0.85)
    out = pipe(2, 2, batch_size=2)
    assert out.rejected == 2  # the two tailed masks, redrawn
    np.testing.assert_array_equal(out.masks, np.stack([disc, _disc(7)]))


def test_save_load_round_trip_gives_identical_samples(tiny_mask_model, tmp_path):
    pipe = load_mask_pipeline(tiny_mask_model)
    assert pipe.unet.config.sample_size == 16 and 0 < pipe.config.pixel_scale < 1
    pipe.save_pretrained(tmp_path / "copy", safe_serialization=True)
    again = load_mask_pipeline(tmp_path / "copy")
    a = pipe.denoise(4, 3, torch.Generator().manual_seed(7))
    b = again.denoise(4, 3, torch.Generator().manual_seed(7))
    c = again.denoise(4, 3, torch.Generator().manual_seed(8))
    assert a.shape == (4, 16, 16) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_samplers_are_swappable(tiny_mask_model):
    pipe = load_mask_pipeline(tiny_mask_model)
    pipe.use_sampler("dpm")
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert np.isfinite(pipe.denoise(2, 3, torch.Generator().manual_seed(0))).all()
    with pytest.raises(CellcascadeError, match="sampler"):
        pipe.use_sampler("euler-magic")


def test_sampling_returns_clean_masks_or_a_clear_error(tiny_mask_model):
    pipe = load_mask_pipeline(tiny_mask_model)
    pipe.register_to_config(min_area=1)
    try:
        out = pipe(3, 2, generator=torch.Generator().manual_seed(0), max_rounds=3)
    except CellcascadeError as exc:  # an almost untrained model may fail: it must say so clearly
        assert "needs more training" in str(exc)
    else:
        assert out.masks.shape == (3, 16, 16) and out.masks.dtype == bool
        assert all(not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()) for m in out.masks)


def test_resumed_training_equals_uninterrupted(tmp_path):
    items = load_sample()
    config = TrainConfig(steps=4, batch_size=4, checkpoint_every=2)
    kwargs = dict(crop_size=16, preset="tiny", config=config, device="cpu", progress=False)
    assert train_mask_model(items, tmp_path / "a", stop_after=2, **kwargs) is None
    assert not (tmp_path / "a").exists() and (tmp_path / "a.checkpoint" / "checkpoint" / "state.json").exists()
    resumed = train_mask_model(items, tmp_path / "a", **kwargs)
    straight = train_mask_model(items, tmp_path / "b", **kwargs)
    assert not (tmp_path / "a.checkpoint").exists()
    for (name, x), (_, y) in zip(resumed.unet.state_dict().items(), straight.unet.state_dict().items()):
        assert torch.equal(x, y), name
    with pytest.raises(CellcascadeError, match="already exists"):
        train_mask_model(items, tmp_path / "a", **kwargs)


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    items = load_sample()
    train_mask_model(items, tmp_path / "a", crop_size=16, preset="tiny", config=TrainConfig(steps=4, batch_size=4),
                     device="cpu", progress=False, stop_after=2)
    with pytest.raises(CellcascadeError, match="another configuration"):
        train_mask_model(items, tmp_path / "a", crop_size=16, preset="tiny",
                         config=TrainConfig(steps=4, batch_size=8), device="cpu", progress=False)


@pytest.mark.parametrize("damage, message", [
    ("pickle", "pickles never"),
    ("no_weights", "weights missing"),
    ("no_unet", "missing"),
    ("foreign_class", "not a 'MaskDiffusionPipeline'"),
    ("no_index", "model_index.json missing"),
])
def test_damaged_model_folder_gives_clear_error(tiny_mask_model, tmp_path, damage, message):
    folder = tmp_path / "model"
    shutil.copytree(tiny_mask_model, folder)
    if damage == "pickle":
        (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    elif damage == "no_weights":
        (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    elif damage == "no_unet":
        shutil.rmtree(folder / "unet")
    elif damage == "foreign_class":
        index = folder / "model_index.json"
        index.write_text(index.read_text().replace("MaskDiffusionPipeline", "StableDiffusionPipeline"))
    elif damage == "no_index":
        (folder / "model_index.json").unlink()
    with pytest.raises(CellcascadeError, match=message):
        load_mask_pipeline(folder)


def test_bad_training_options(tmp_path):
    items = load_sample()
    with pytest.raises(CellcascadeError, match="divisible"):
        train_mask_model(items, tmp_path / "x", crop_size=30, preset="cpu")
    with pytest.raises(CellcascadeError, match="preset"):
        train_mask_model(items, tmp_path / "x", crop_size=32, preset="huge")
