"""The pretrained path on a tiny Stable Diffusion built from configs (no download): train, save, reload, sample."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

from cellcascade.data import load_sample
from cellcascade.errors import CellcascadeError
from cellcascade.pipelines.controlnet import load_controlnet_texture, train_controlnet_texture

CROSS_DIM = 16


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A diffusers-format Stable Diffusion folder with a tiny UNet, a tiny VAE (factor 2) and SD's noise schedule."""
    folder = tmp_path_factory.mktemp("sd") / "tiny-sd"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM, attention_head_dim=2, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
    )
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="module")
def items():
    item = load_sample()[0]
    item.image, item.labels = item.image[:96, :96], item.labels[:96, :96]
    return [item]


@pytest.mark.parametrize("pixel_space", [True, False])
def test_train_save_reload_and_sample(tiny_sd, items, tmp_path, pixel_space):
    out = tmp_path / "controlnet"
    pipe = train_controlnet_texture(tiny_sd, items, out, patch_size=16, pixel_space=pixel_space, steps=2,
                                    batch_size=2, learning_rate=1e-4, num_patches=8, device="cpu", progress=False)
    index = json.loads((out / "texture_controlnet.json").read_text())
    assert len(index["losses"]) == 2 and np.isfinite(index["losses"]).all()
    assert index["pixel_space"] is pixel_space and index["intensity_high"] > index["intensity_low"]
    assert (out / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not [f for f in out.rglob("*") if f.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    # the condition encoder keeps full resolution in pixel space and downsamples to latents otherwise
    assert pipe.controlnet.config.conditioning_embedding_out_channels == ((16,) if pixel_space else (16, 32))
    again = load_controlnet_texture(out)
    for (name, x), (_, y) in zip(pipe.controlnet.state_dict().items(), again.controlnet.state_dict().items()):
        assert torch.equal(x, y), name
    labels = items[0].labels[:40, :56]
    a = pipe(labels, 2, generator=torch.Generator().manual_seed(0)).image
    b = again(labels, 2, generator=torch.Generator().manual_seed(0)).image
    assert a.shape == (40, 56) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_training_moves_the_controlnet(tiny_sd, items, tmp_path):
    pipe = train_controlnet_texture(tiny_sd, items, tmp_path / "c", patch_size=16, steps=2, batch_size=2,
                                    learning_rate=1e-3, num_patches=8, device="cpu", progress=False)
    fresh = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16,))
    # ControlNet's zero convolutions start at 0 and must have been trained
    assert pipe.controlnet.controlnet_mid_block.weight.abs().sum() > 0
    assert fresh.controlnet_mid_block.weight.abs().sum() == 0


def test_bad_inputs_give_clear_errors(tiny_sd, items, tmp_path):
    kwargs = dict(steps=1, batch_size=1, num_patches=2, device="cpu", progress=False)
    with pytest.raises(CellcascadeError, match="not found"):
        train_controlnet_texture(tmp_path / "nothing", items, tmp_path / "a", **kwargs)
    with pytest.raises(CellcascadeError, match="multiple of 4"):
        train_controlnet_texture(tiny_sd, items, tmp_path / "a", patch_size=18, pixel_space=False, **kwargs)
    with pytest.raises(CellcascadeError, match="prompt embedding"):
        train_controlnet_texture(tiny_sd, items, tmp_path / "a", patch_size=16, prompt_embeds=torch.zeros(1, 77, 8), **kwargs)
    with pytest.raises(CellcascadeError, match="missing"):
        load_controlnet_texture(tmp_path)
    (tmp_path / "exists").mkdir()
    with pytest.raises(CellcascadeError, match="already exists"):
        train_controlnet_texture(tiny_sd, items, tmp_path / "exists", **kwargs)
    out = tmp_path / "ok"
    train_controlnet_texture(tiny_sd, items, out, patch_size=16, **kwargs)
    (out / "controlnet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CellcascadeError, match="pickles never"):
        load_controlnet_texture(out)


def test_fit_with_pretrained_then_generate(tiny_sd, items, tmp_path):
    """`cellcascade fit --pretrained SD` makes a cascade whose texture stage is the ControlNet; generate uses it."""
    from cellcascade.cli import main
    from cellcascade.io.tiff import write_tiff

    data = tmp_path / "data"
    data.mkdir()
    write_tiff(data / "a.tif", items[0].image)
    write_tiff(data / "a_masks.tif", items[0].labels.astype(np.uint16))
    model = tmp_path / "model"
    fit = ["fit", str(data), "--dense", "--out", str(model), "--pretrained", str(tiny_sd), "--preset", "tiny",
           "--crop-size", "16", "--patch-size", "16", "--mask-steps", "2", "--texture-steps", "2", "--batch-size", "2",
           "--device", "cpu", "--quiet"]
    assert main(fit) == 0
    info = json.loads((model / "cascade.json").read_text())
    assert info["texture_kind"] == "controlnet"
    assert (model / "texture" / "texture_controlnet.json").is_file()
    out = tmp_path / "out"
    generate = ["generate", str(model), "--n", "1", "--size", "32", "40", "--cells", "2", "--shapes-per-image", "2",
                "--steps", "2", "--texture-steps", "2", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(generate) == 0
    import tifffile

    image = tifffile.imread(out / "img_0000.tif")
    assert image.shape == (32, 40) and image.dtype == items[0].image.dtype


def test_fit_pretrained_must_be_a_stable_diffusion_folder(tmp_path, capsys):
    from cellcascade.cli import main

    assert main(["fit", "sample", "--out", str(tmp_path / "m"), "--pretrained", str(tmp_path)]) == 2
    assert "unet/ missing" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()
