"""Stage 5, pretrained path: a ControlNet on a local Stable Diffusion, with the label conditions as control image.

This is the paper's set-up for users who have a diffusers-format Stable Diffusion folder (``unet/``, ``vae/``,
``scheduler/``, weights as safetensors) and a GPU. A diffusers ``ControlNetModel`` is made from the SD UNet
(``ControlNetModel.from_unet``) and trained while the UNet (and VAE) stay frozen, as in diffusers'
``examples/controlnet/train_controlnet.py``:

* control image: the 3 condition channels of :func:`cellcascade.models.conditions.label_conditions` (in [0, 1]);
* prompt: empty. No tokenizer or text encoder is loaded: the prompt embedding is fixed (zeros of shape
  (1, 77, cross_attention_dim) by default, or a tensor the caller passes, e.g. a precomputed CLIP embedding of "");
  it is saved with the ControlNet so that sampling uses the same. With an empty prompt for both branches,
  classifier-free guidance (the paper's CFG 5) has nothing to contrast, so it is left out;
* ``pixel_space=True`` (the paper's choice; default): the VAE is bypassed and the UNet denoises the grey image
  itself, repeated over its input channels (the output is their mean); the ControlNet's condition encoder then
  keeps the full resolution. ``pixel_space=False``: the usual latent diffusion (grey → RGB → VAE latents).
* the same training patches and per-pixel loss weights as the from-scratch model
  (:mod:`cellcascade.training.texture`), and the same tiled, seam-free sampling for any canvas size.

Saved folder (``config.json`` + safetensors only; the Stable Diffusion weights are referenced, not copied)::

    out_dir/texture_controlnet.json       base-model path, pixel_space, patch size, intensity range, losses
    out_dir/controlnet/                    ControlNetModel (config.json + diffusion_pytorch_model.safetensors)
    out_dir/prompt_embeds.safetensors      the fixed prompt embedding
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cellcascade.errors import CellcascadeError
from cellcascade.io.model_folder import PICKLE_SUFFIXES
from cellcascade.models.conditions import CONDITION_NAMES, label_conditions
from cellcascade.pipelines.texture import TextureOutput, check_label_canvas, from_unit, tiled_denoise

INDEX_FILE = "texture_controlnet.json"
PROMPT_FILE = "prompt_embeds.safetensors"
PROMPT_LENGTH = 77
# diffusers' default condition encoder (4 convolution stages, 3 of them stride 2: image → latent resolution)
EMBEDDING_CHANNELS = (16, 32, 96, 256)


def empty_prompt_embeddings(unet: UNet2DConditionModel) -> torch.Tensor:
    """The fixed prompt embedding used when none is given: zeros, float32 (1, 77, cross_attention_dim)."""
    return torch.zeros((1, PROMPT_LENGTH, int(unet.config.cross_attention_dim)))


def vae_factor(vae: AutoencoderKL) -> int:
    """Image pixels per latent pixel of a diffusers AutoencoderKL (8 for Stable Diffusion)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def unet_factor(unet) -> int:
    """The UNet's total downsampling: input sides must be multiples of this."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def make_sampler(noise_scheduler_config, pixel_space: bool) -> DDIMScheduler:
    """A DDIM sampler on the base model's noise schedule; in pixel space the predicted image is clipped to [-1, 1]."""
    return DDIMScheduler.from_config(noise_scheduler_config, clip_sample=pixel_space)


def load_base_model(
    path: str | Path, need_vae: bool
) -> tuple[UNet2DConditionModel, AutoencoderKL | None, DDPMScheduler]:
    """Load the UNet, (VAE) and noise scheduler of a local diffusers-format Stable Diffusion folder (safetensors only).

    Raises CellcascadeError (one line) if the folder or a needed part is missing or unreadable.
    """
    path = Path(path)
    if not path.is_dir():
        raise CellcascadeError(f"{path}: Stable Diffusion folder not found")
    parts = ["unet", "scheduler"] + (["vae"] if need_vae else [])
    for part in parts:
        if not (path / part).is_dir():
            raise CellcascadeError(f"{path}: not a diffusers Stable Diffusion folder ({part}/ missing)")
    for part in ("unet", "vae") if need_vae else ("unet",):
        if not list((path / part).glob("*.safetensors")):
            raise CellcascadeError(f"{path / part}: no .safetensors weights (pickled weights are never loaded)")
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", use_safetensors=True)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", use_safetensors=True) if need_vae else None
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    except Exception as exc:  # diffusers raises several types for damaged folders
        raise CellcascadeError(f"{path}: cannot load the Stable Diffusion model ({exc})".splitlines()[0]) from None
    return unet, vae, scheduler


class ControlNetTexturePipeline(DiffusionPipeline):
    """Label image → intensity image with a frozen Stable Diffusion UNet steered by a trained ControlNet.

    Parameters
    ----------
    unet : UNet2DConditionModel
        The base model's UNet (frozen).
    controlnet : ControlNetModel
        Takes the 3 condition channels as control image.
    scheduler : DDIMScheduler (or another diffusers sampler)
    vae : AutoencoderKL or None
        Needed only when ``pixel_space`` is False.
    prompt_embeds : Tensor float32 (1, L, D), optional
        The fixed prompt embedding (zeros by default).
    intensity_low, intensity_high : float
        Data intensities that map to -1 and 1.
    pixel_space : bool
        True: the UNet denoises pixels (VAE bypassed); False: VAE latents.
    patch_size : int
        Training patch side in image pixels (the tile side when sampling).
    tile_overlap : int
        Overlap of neighbouring tiles, in pixels of the denoised variable.
    """

    model_cpu_offload_seq = "controlnet->unet->vae"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        scheduler,
        vae: AutoencoderKL | None = None,
        prompt_embeds: torch.Tensor | None = None,
        intensity_low: float = 0.0,
        intensity_high: float = 1.0,
        pixel_space: bool = True,
        patch_size: int = 64,
        tile_overlap: int = 16,
    ):
        super().__init__()
        if not pixel_space and vae is None:
            raise CellcascadeError("latent-space sampling (pixel_space=False) needs the VAE")
        self.register_modules(unet=unet, controlnet=controlnet, scheduler=scheduler, vae=vae)
        self.prompt_embeds = empty_prompt_embeddings(unet) if prompt_embeds is None else prompt_embeds
        self.settings = {
            "intensity_low": float(intensity_low), "intensity_high": float(intensity_high),
            "pixel_space": bool(pixel_space), "patch_size": int(patch_size), "tile_overlap": int(tile_overlap),
        }

    @property
    def factor(self) -> int:
        """Image pixels per denoised pixel (1 in pixel space)."""
        return 1 if self.settings["pixel_space"] else vae_factor(self.vae)

    def use_sampler(self, name: str) -> None:
        """Switch the sampler to "ddim" or "dpm" (DPM-Solver++), keeping the noise schedule."""
        from cellcascade.pipelines.texture import SAMPLERS

        if name not in SAMPLERS:
            raise CellcascadeError(f"sampler must be one of {sorted(SAMPLERS)}, not {name!r}")
        self.scheduler = SAMPLERS[name].from_config(self.scheduler.config)

    def _predict(self, x: torch.Tensor, cond: torch.Tensor, t, conditioning_scale: float = 1.0) -> torch.Tensor:
        embeds = self.prompt_embeds.to(x.device)
        return predict_noise(self.unet, self.controlnet, x, cond, t, embeds, conditioning_scale)

    @torch.no_grad()
    def __call__(
        self,
        labels: np.ndarray,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        conditioning_scale: float = 1.0,
        batch_size: int = 8,
        progress: bool = False,
    ) -> TextureOutput:
        """Generate the intensity image of `labels` (int (Y, X), any size); returns TextureOutput (float32 (Y, X))."""
        labels = check_label_canvas(labels)
        if num_inference_steps < 1:
            raise CellcascadeError(f"number of sampling steps must be positive, not {num_inference_steps}")
        s = self.settings
        factor = self.factor
        conditions = torch.from_numpy(label_conditions(labels))
        denoised = tiled_denoise(
            lambda x, c, t: self._predict(x, c, t, conditioning_scale), conditions, self.unet.config.in_channels,
            self.scheduler, num_inference_steps, generator, tile=s["patch_size"] // factor,
            overlap=s["tile_overlap"], factor=factor, batch_size=batch_size, device=self.device, progress=progress,
        )
        if s["pixel_space"]:
            unit = denoised.mean(dim=0)
        else:
            latents = denoised[None].to(self.device) / self.vae.config.scaling_factor
            unit = self.vae.decode(latents).sample[0].mean(dim=0).float().cpu()
        unit = unit[: labels.shape[0], : labels.shape[1]].clamp(-1, 1).numpy()
        return TextureOutput(image=from_unit(unit, s["intensity_low"], s["intensity_high"]))


def predict_noise(unet, controlnet, x, cond, t, prompt_embeds, conditioning_scale: float = 1.0) -> torch.Tensor:
    """One ControlNet-steered UNet evaluation: x (B, C, h, w), cond (B, 3, H, W) in [0, 1] → prediction like x."""
    embeds = prompt_embeds.expand(x.shape[0], -1, -1)
    down, mid = controlnet(
        x, t, encoder_hidden_states=embeds, controlnet_cond=cond, conditioning_scale=conditioning_scale,
        return_dict=False,
    )
    return unet(x, t, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


def train_controlnet_texture(
    base_model: str | Path,
    items: list,
    out_dir: str | Path,
    *,
    patch_size: int = 64,
    pixel_space: bool = True,
    steps: int = 5000,
    batch_size: int = 8,
    learning_rate: float = 1e-5,
    num_patches: int = 2048,
    margin: int = 3,
    prompt_embeds: torch.Tensor | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> ControlNetTexturePipeline:
    """Train a ControlNet on a local Stable Diffusion to turn label conditions into the texture of `items`.

    Parameters
    ----------
    base_model : path
        Local diffusers-format Stable Diffusion folder (``unet/``, ``scheduler/``, and ``vae/`` for latent mode).
    items : list of AnnotatedImage (2D)
        Training data; sparse annotations are handled as in :mod:`cellcascade.training.texture`.
    out_dir : path
        Must not exist yet; written only when training is complete.
    patch_size : int
        Training patch side in image pixels (a multiple of the UNet's — and in latent mode also the VAE's —
        downsampling factor).
    pixel_space : bool
        True (the paper): bypass the VAE, denoise pixels. False: denoise VAE latents.
    steps, batch_size, learning_rate : training length, batch and AdamW learning rate (diffusers' example: 1e-5).
    num_patches : int
        Patches drawn once before training.
    margin : int
        Background margin learned around annotated cells (pixels).
    prompt_embeds : Tensor float32 (1, L, cross_attention_dim), optional
        Fixed prompt embedding; zeros if not given.
    seed : int
        Patches, ControlNet batches and noise.
    device : {"auto", "cpu", "cuda"}

    Returns
    -------
    ControlNetTexturePipeline (DDIM sampler), also saved to `out_dir`.
    """
    from cellcascade.training.loop import make_accelerator
    from cellcascade.training.texture import texture_patches

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise CellcascadeError(f"{out_dir}: already exists; choose another output folder or remove it")
    if steps < 1 or batch_size < 1:
        raise CellcascadeError(f"steps and batch size must be positive, not {steps} and {batch_size}")
    unet, vae, noise_scheduler = load_base_model(base_model, need_vae=not pixel_space)
    factor = 1 if pixel_space else vae_factor(vae)
    if patch_size % (factor * unet_factor(unet)):
        multiple = factor * unet_factor(unet)
        raise CellcascadeError(f"patch size must be a multiple of {multiple} for this model, not {patch_size}")
    if prompt_embeds is None:
        prompt_embeds = empty_prompt_embeddings(unet)
    if prompt_embeds.ndim != 3 or prompt_embeds.shape[-1] != unet.config.cross_attention_dim:
        raise CellcascadeError(
            f"prompt embedding must have shape (1, L, {unet.config.cross_attention_dim}), not {tuple(prompt_embeds.shape)}"
        )
    patches = texture_patches(items, patch_size, num_patches, margin=margin, seed=seed)
    embedding_channels = EMBEDDING_CHANNELS[: int(math.log2(factor)) + 1]
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=embedding_channels, conditioning_channels=len(CONDITION_NAMES)
    )
    for frozen in (unet, vae):
        if frozen is not None:
            frozen.requires_grad_(False).eval()
    accelerator = make_accelerator(device)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=learning_rate)
    controlnet, optimizer = accelerator.prepare(controlnet, optimizer)
    dev = accelerator.device
    unet.to(dev)
    if vae is not None:
        vae.to(dev)
    embeds = prompt_embeds.to(dev)
    generator = torch.Generator().manual_seed(seed)
    channels = unet.config.in_channels
    losses = []
    controlnet.train()
    for _ in tqdm(range(steps), desc="training controlnet", disable=not progress):
        index = torch.randint(0, len(patches.images), (batch_size,), generator=generator)
        k = int(torch.randint(0, 4, (1,), generator=generator))  # one rot90 for the batch (augmentation)
        image, cond, weight = (torch.rot90(a[index], k, dims=(-2, -1)).to(dev) for a in
                               (patches.images, patches.conditions, patches.weights))
        with torch.no_grad():
            if pixel_space:
                clean = image.repeat(1, channels, 1, 1)
            else:
                latent = vae.encode(image.repeat(1, 3, 1, 1)).latent_dist.sample(generator=generator)
                clean = latent * vae.config.scaling_factor
                weight = -F.max_pool2d(-weight, factor)  # a latent pixel is known only if all its pixels are
        noise = torch.randn(clean.shape, generator=generator).to(dev)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator).to(dev)
        noisy = noise_scheduler.add_noise(clean, noise, t)
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(clean, noise, t)
        else:
            target = noise
        prediction = predict_noise(unet, controlnet, noisy, cond, t, embeds)
        error = (prediction.float() - target.float()) ** 2
        loss = (error * weight).sum() / (weight.sum() * channels).clamp_min(1.0)
        optimizer.zero_grad()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.item()))
    controlnet = accelerator.unwrap_model(controlnet).to("cpu").eval()
    pipe = ControlNetTexturePipeline(
        unet.to("cpu"), controlnet, make_sampler(noise_scheduler.config, pixel_space),
        vae=vae.to("cpu") if vae is not None else None, prompt_embeds=prompt_embeds.cpu(),
        intensity_low=patches.intensity_low, intensity_high=patches.intensity_high, pixel_space=pixel_space,
        patch_size=patch_size, tile_overlap=patch_size // factor // 4,
    )
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    controlnet.save_pretrained(tmp / "controlnet", safe_serialization=True)
    save_file({"prompt_embeds": pipe.prompt_embeds.contiguous()}, tmp / PROMPT_FILE)
    index = {
        "base_model": str(Path(base_model).resolve()), **pipe.settings,
        "train": {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "num_patches": num_patches,
                  "margin": margin, "seed": seed, "sources": sorted({item.name for item in items})},
        "losses": losses,
    }
    (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1))
    tmp.rename(out_dir)
    return pipe


def load_controlnet_texture(
    path: str | Path, base_model: str | Path | None = None, device: str = "cpu"
) -> ControlNetTexturePipeline:
    """Load a folder written by :func:`train_controlnet_texture` (safetensors only, checked first).

    Parameters
    ----------
    path : path
        The trained folder.
    base_model : path, optional
        The Stable Diffusion folder; default: the path recorded at training time.
    device : str

    Raises CellcascadeError (one line) if the folder is missing, incomplete or holds a pickle.
    """
    path = Path(path)
    if not (path / INDEX_FILE).is_file():
        raise CellcascadeError(f"{path}: not a ControlNet texture folder ({INDEX_FILE} missing)")
    for file in path.rglob("*"):
        suffix = file.suffix.lower()
        if file.is_file() and (suffix in PICKLE_SUFFIXES or suffix not in {".json", ".safetensors"}):
            raise CellcascadeError(
                f"{file}: unexpected file in a model folder (only JSON and safetensors are loaded; pickles never)"
            )
    if not list((path / "controlnet").glob("*.safetensors")) or not (path / PROMPT_FILE).is_file():
        raise CellcascadeError(f"{path}: incomplete ControlNet texture folder (ControlNet weights or {PROMPT_FILE} missing)")
    try:
        index = json.loads((path / INDEX_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise CellcascadeError(f"{path / INDEX_FILE}: invalid JSON ({exc})") from None
    unet, vae, noise_scheduler = load_base_model(base_model or index["base_model"], need_vae=not index["pixel_space"])
    try:
        controlnet = ControlNetModel.from_pretrained(path / "controlnet", use_safetensors=True)
    except Exception as exc:
        raise CellcascadeError(f"{path}: cannot load the ControlNet ({exc})".splitlines()[0]) from None
    pipe = ControlNetTexturePipeline(
        unet, controlnet, make_sampler(noise_scheduler.config, index["pixel_space"]), vae=vae,
        prompt_embeds=load_file(path / PROMPT_FILE)["prompt_embeds"],
        **{key: index[key] for key in ("intensity_low", "intensity_high", "pixel_space", "patch_size", "tile_overlap")},
    )
    return pipe.to(device)
