"""Stage 5: mask-conditioned texture diffusion — label image → intensity image, for any canvas size.

The denoiser is a ``UNet2DModel`` that sees the noisy image (1 channel) concatenated with the condition channels of
the label image (:func:`cellcascade.models.conditions.label_conditions`). It is trained on square patches; a canvas
of any size is denoised in overlapping tiles of that patch size, and at *every* sampling step the tiles' noise
predictions are blended with a window that falls off linearly over the overlap (as MultiDiffusion does). All tiles
update one shared canvas, so neighbouring tiles agree on their overlap at every step and no seam forms; the network
always sees inputs of the size it was trained on (its attention and normalisation statistics do not change with the
canvas size).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DModel
from tqdm.auto import tqdm

from cellcascade.errors import CellcascadeError
from cellcascade.models.conditions import CONDITION_NAMES, label_conditions

SAMPLERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


@dataclass
class TextureOutput:
    """A generated intensity image.

    Attributes
    ----------
    image : ndarray float32, shape (Y, X)
        Intensities in the training data's units (the inverse of the per-dataset normalisation), same shape as the
        label image. It includes the background and noise the model learned from the data.
    """

    image: np.ndarray


def to_unit(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map data intensities to [-1, 1] (`low` → -1, `high` → 1, clipped); float32, same shape."""
    scaled = 2.0 * (np.asarray(image, np.float32) - low) / max(high - low, 1e-12) - 1.0
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def from_unit(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Inverse of :func:`to_unit` (without the clipping): [-1, 1] → data units; float32, same shape."""
    return ((np.asarray(image, np.float32) + 1.0) * 0.5 * (high - low) + low).astype(np.float32)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side `tile` that cover ``range(length)`` with at least `overlap` shared pixels.

    Examples
    --------
    >>> tile_starts(256, 64, 16)
    [0, 48, 96, 144, 192]
    >>> tile_starts(40, 64, 16)
    [0]
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return sorted({round(i * (length - tile) / (count - 1)) for i in range(count)})


def blend_window(tile: int, overlap: int) -> torch.Tensor:
    """float32 (tile, tile) weights: 1 inside, falling linearly to ``1/(overlap+1)`` over `overlap` edge pixels."""
    i = torch.arange(tile, dtype=torch.float32)
    ramp = torch.minimum(torch.minimum((i + 1) / (overlap + 1), (tile - i) / (overlap + 1)), torch.ones(()))
    return ramp[:, None] * ramp[None, :]


def tiled_denoise(
    predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    conditions: torch.Tensor,
    channels: int,
    scheduler,
    num_inference_steps: int,
    generator: torch.Generator | None,
    *,
    tile: int,
    overlap: int,
    factor: int = 1,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    progress: bool = False,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample one canvas by denoising overlapping tiles and blending their noise predictions at every step.

    Parameters
    ----------
    predict : callable (x (B, channels, tile, tile), cond (B, Cc, tile·factor, tile·factor), t) -> noise like x
        The denoiser on a batch of tiles.
    conditions : Tensor float32 (Cc, H, W)
        Condition channels of the whole canvas, at image resolution.
    channels : int
        Channels of the denoised variable (1 for pixels, 4 for Stable Diffusion latents).
    scheduler : diffusers scheduler
        ``set_timesteps``/``step`` drive the sampling.
    num_inference_steps : int
    generator : torch.Generator or None
        Draws the initial noise (on the CPU, so results do not depend on the device).
    tile : int
        Tile side in the denoised variable's pixels (the training patch size).
    overlap : int
        Minimum overlap of neighbouring tiles (pixels of the denoised variable); the blend ramp is this wide.
    factor : int
        Image pixels per denoised pixel (1 in pixel space, 8 for a Stable Diffusion VAE).
    noise : Tensor float32 (channels, ceil(H / factor), ceil(W / factor)), optional
        The initial noise (standard normal), e.g. shared between the z-slices of a volume; drawn from `generator`
        where not given (and on any padding of canvases smaller than a tile).

    Returns
    -------
    Tensor float32 (channels, ceil(H / factor), ceil(W / factor)): the denoised canvas.
    """
    _, height, width = conditions.shape
    h, w = -(-height // factor), -(-width // factor)
    padded_h, padded_w = max(tile, h), max(tile, w)
    cond = torch.zeros((conditions.shape[0], padded_h * factor, padded_w * factor), dtype=torch.float32)
    cond[:, :height, :width] = conditions
    cond = cond.to(device)
    boxes = [(y, x) for y in tile_starts(padded_h, tile, overlap) for x in tile_starts(padded_w, tile, overlap)]
    window = blend_window(tile, overlap).to(device)
    norm = torch.zeros((padded_h, padded_w), device=device)
    for y, x in boxes:
        norm[y : y + tile, x : x + tile] += window
    sample = torch.randn((1, channels, padded_h, padded_w), generator=generator)
    if noise is not None:
        if tuple(noise.shape) != (channels, h, w):
            raise CellcascadeError(f"initial noise must have shape {(channels, h, w)}, not {tuple(noise.shape)}")
        sample[0, :, :h, :w] = noise
    sample = sample.to(device)
    scheduler.set_timesteps(num_inference_steps)
    sample = sample * scheduler.init_noise_sigma
    for t in tqdm(scheduler.timesteps, desc="texture", disable=not progress):
        noise = torch.zeros_like(sample)
        model_input = scheduler.scale_model_input(sample, t)
        for start in range(0, len(boxes), batch_size):
            chunk = boxes[start : start + batch_size]
            x_tiles = torch.cat([model_input[:, :, y : y + tile, x : x + tile] for y, x in chunk])
            c_tiles = torch.stack(
                [cond[:, y * factor : (y + tile) * factor, x * factor : (x + tile) * factor] for y, x in chunk]
            )
            eps = predict(x_tiles, c_tiles, t)
            for k, (y, x) in enumerate(chunk):
                noise[0, :, y : y + tile, x : x + tile] += eps[k] * window
        sample = scheduler.step(noise / norm, t, sample).prev_sample
    return sample[0, :, :h, :w].float().cpu()


def check_label_canvas(labels: np.ndarray) -> np.ndarray:
    """Return `labels` as an int array (Y, X); raise CellcascadeError if it is not a 2D integer label image."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise CellcascadeError(f"labels must be an integer array, found dtype {labels.dtype}")
    if labels.ndim != 2:
        raise CellcascadeError(f"the texture model takes a 2D (Y, X) label image, found shape {labels.shape}")
    if min(labels.shape) < 1:
        raise CellcascadeError(f"the label image is empty (shape {labels.shape})")
    return labels


class TexturePipeline(DiffusionPipeline):
    """Label image → intensity image (texture, background and noise learned from the training data).

    Parameters
    ----------
    unet : UNet2DModel
        ``1 + len(CONDITION_NAMES)`` channels in (noisy image, then conditions), 1 out; ``sample_size`` is the
        training patch side, which is also the tile side at sampling time.
    scheduler : DDIMScheduler or DPMSolverMultistepScheduler
    intensity_low, intensity_high : float
        The data intensities that map to -1 and 1 (robust per-dataset range); outputs are mapped back with them.
    tile_overlap : int
        Minimum overlap of neighbouring tiles on canvases larger than one patch (pixels).

    Examples
    --------
    >>> pipe = load_texture_pipeline("texture-model")  # doctest: +SKIP
    >>> out = pipe(labels, num_inference_steps=20, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> out.image.shape == labels.shape  # doctest: +SKIP
    True
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler,
        intensity_low: float = 0.0,
        intensity_high: float = 1.0,
        tile_overlap: int = 16,
    ):
        super().__init__()
        if unet.config.in_channels != 1 + len(CONDITION_NAMES) or unet.config.out_channels != 1:
            raise CellcascadeError(
                f"the texture UNet must take {1 + len(CONDITION_NAMES)} channels and return 1, "
                f"found {unet.config.in_channels} → {unet.config.out_channels}"
            )
        if not intensity_high > intensity_low:
            raise CellcascadeError(f"intensity range [{intensity_low}, {intensity_high}] is empty")
        if not 0 <= tile_overlap < unet.config.sample_size:
            raise CellcascadeError(f"tile overlap must be in [0, {unet.config.sample_size}), not {tile_overlap}")
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(
            intensity_low=float(intensity_low), intensity_high=float(intensity_high), tile_overlap=int(tile_overlap)
        )

    def use_sampler(self, name: str) -> None:
        """Switch the sampler to "ddim" or "dpm" (DPM-Solver++), keeping the noise schedule."""
        if name not in SAMPLERS:
            raise CellcascadeError(f"sampler must be one of {sorted(SAMPLERS)}, not {name!r}")
        self.scheduler = SAMPLERS[name].from_config(self.scheduler.config)

    def _predict(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([x, cond], dim=1), t).sample

    @torch.no_grad()
    def __call__(
        self,
        labels: np.ndarray,
        num_inference_steps: int = 20,
        generator: torch.Generator | None = None,
        batch_size: int = 16,
        progress: bool = False,
        noise: np.ndarray | None = None,
        conditions: np.ndarray | None = None,
    ) -> TextureOutput:
        """Generate the intensity image of `labels`.

        Parameters
        ----------
        labels : ndarray int, shape (Y, X)
            Instance labels, 0 = background; any size (tiled with overlap when larger than one patch, padded with
            background when smaller).
        num_inference_steps : int
        generator : torch.Generator, optional
            Same generator state → same image.
        batch_size : int
            Tiles per UNet call.
        noise : ndarray float32 (Y, X), optional
            Initial standard-normal noise instead of drawing it from `generator` (e.g. one noise base shared by the
            slices of a volume, for slice-to-slice continuity).
        conditions : ndarray float32 (3, Y, X), optional
            Condition channels to use instead of ``label_conditions(labels)`` (e.g. a z-slice of
            :func:`~cellcascade.models.conditions.volume_slice_conditions`).

        Returns
        -------
        TextureOutput with ``image`` float32 (Y, X) in data units.
        """
        labels = check_label_canvas(labels)
        if num_inference_steps < 1:
            raise CellcascadeError(f"number of sampling steps must be positive, not {num_inference_steps}")
        if conditions is None:
            conditions = label_conditions(labels)
        elif np.shape(conditions) != (len(CONDITION_NAMES), *labels.shape):
            raise CellcascadeError(
                f"conditions must have shape {(len(CONDITION_NAMES), *labels.shape)}, not {np.shape(conditions)}"
            )
        conditions = torch.from_numpy(np.asarray(conditions, np.float32))
        unit = tiled_denoise(
            self._predict, conditions, 1, self.scheduler, num_inference_steps, generator,
            tile=self.unet.config.sample_size, overlap=self.config.tile_overlap, batch_size=batch_size,
            device=self.device, progress=progress,
            noise=None if noise is None else torch.as_tensor(np.asarray(noise, np.float32))[None],
        )
        image = from_unit(unit[0].clamp(-1, 1).numpy(), self.config.intensity_low, self.config.intensity_high)
        return TextureOutput(image=image)


def load_texture_pipeline(path, device: str = "cpu") -> TexturePipeline:
    """Load a saved texture model folder (safetensors only, checked first); raise CellcascadeError if unusable."""
    from diffusers.utils import logging as diffusers_logging

    from cellcascade.io.model_folder import check_pipeline_folder

    folder = check_pipeline_folder(path, "TexturePipeline")
    diffusers_logging.disable_progress_bar()
    try:
        pipe = TexturePipeline.from_pretrained(folder, use_safetensors=True)
    except CellcascadeError:
        raise
    except Exception as exc:  # diffusers raises several types for damaged folders
        raise CellcascadeError(f"{folder}: cannot load the texture model ({exc})".splitlines()[0]) from None
    finally:
        diffusers_logging.enable_progress_bar()
    return pipe.to(device)
