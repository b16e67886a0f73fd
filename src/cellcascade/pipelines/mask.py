"""Stage 1: single-cell mask diffusion (the paper's MaskDDPM) — a diffusers pipeline over a ``UNet2DModel``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DModel
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from cellcascade.errors import CellcascadeError

SAMPLERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


@dataclass
class MaskOutput:
    """Generated single-cell masks.

    Attributes
    ----------
    masks : ndarray bool, shape (N, S, S)
        One connected, hole-free cell per mask, at the model's crop scale.
    soft : ndarray float32, shape (N, S, S)
        The model's raw outputs in [-1, 1] for the same masks (threshold 0); resize these, not the binary masks,
        to get smooth outlines at another scale (:func:`cellcascade.pipelines.labels.to_image_scale`).
    pixel_scale : float
        Crop pixels per image pixel of the training data: resize by ``1 / pixel_scale`` to get image pixels.
    rejected : int
        Samples drawn but rejected as degenerate (too small, touching the crop border, or less convex than the
        pipeline's ``min_solidity``).
    """

    masks: np.ndarray
    soft: np.ndarray
    pixel_scale: float
    rejected: int


def smooth_output(raw: np.ndarray, smoothing: float, threshold: float) -> np.ndarray:
    """The soft mask of a raw model output: Gaussian-smoothed (sigma `smoothing`, crop pixels) minus `threshold`.

    The cell is where the result is > 0. Smoothing removes the pixel-scale ragged edges and thin spurs that a small
    model trained briefly leaves on outlines (real nuclei outlines are smooth); `threshold` is calibrated after
    training so that generated areas match the training cells' (:func:`calibrate_threshold`).

    Parameters
    ----------
    raw : ndarray float32 (S, S) or (N, S, S), in [-1, 1]

    Returns
    -------
    ndarray float32, same shape
    """
    raw = np.asarray(raw, np.float32)
    if smoothing > 0:
        sigma = (0,) * (raw.ndim - 2) + (smoothing, smoothing)
        raw = ndi.gaussian_filter(raw, sigma, mode="constant", cval=-1.0)
    return raw - np.float32(threshold)


def calibrate_threshold(raw: np.ndarray, smoothing: float, target_area: float) -> float:
    """The threshold in [-0.9, 0.9] at which the mean area of the cleaned masks of `raw` (N, S, S) is `target_area`."""
    low, high = -0.9, 0.9
    for _ in range(20):  # bisection: the area shrinks as the threshold grows
        middle = (low + high) / 2
        masks = [clean_mask(soft, 1, reject_border=False) for soft in smooth_output(raw, smoothing, middle)]
        areas = [m.sum() for m in masks if m is not None]
        if not areas or np.mean(areas) < target_area:
            high = middle
        else:
            low = middle
    return float((low + high) / 2)


def clean_mask(soft: np.ndarray, min_area: int, reject_border: bool = True, min_solidity: float = 0.0) -> np.ndarray | None:
    """Largest connected component of ``soft > 0``, holes filled; None if degenerate.

    Parameters
    ----------
    soft : ndarray float (S, S)
        Soft mask (cell where > 0), e.g. from :func:`smooth_output`.
    min_area : int
        Smallest accepted area in pixels.
    reject_border : bool
        Reject masks that touch the crop border (cut cells).
    min_solidity : float
        Reject masks whose solidity (area / convex hull area) is below this (0 = keep every shape). A small
        model leaves a few masks with thin tails or deep notches that no training cell has.

    Returns
    -------
    ndarray bool (S, S), or None if too small, touching the crop border or less convex than `min_solidity`.
    """
    binary = soft > 0
    components, count = ndi.label(binary)
    if count == 0:
        return None
    sizes = np.bincount(components.ravel())[1:]
    mask = ndi.binary_fill_holes(components == 1 + int(np.argmax(sizes)))
    if mask.sum() < min_area:
        return None
    if reject_border and (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()):
        return None
    if min_solidity > 0 and solidity(mask) < min_solidity:
        return None
    return mask


def solidity(mask: np.ndarray) -> float:
    """Area / convex hull area of one bool mask (Y, X), as scikit-image's regionprops measures it."""
    from skimage.measure import regionprops

    return float(regionprops(mask.astype(np.uint8))[0].solidity)


class MaskDiffusionPipeline(DiffusionPipeline):
    """Unconditional generator of single-cell binary masks.

    Parameters
    ----------
    unet : UNet2DModel
        1 channel in, 1 out; ``sample_size`` is the crop side S.
    scheduler : DDIMScheduler or DPMSolverMultistepScheduler
        A few-step sampler (swappable: ``pipe.scheduler = DPMSolverMultistepScheduler.from_config(...)``).
    pixel_scale : float
        Crop pixels per image pixel of the data it was trained on.
    min_area : int
        Smallest accepted mask area in crop pixels.
    smoothing : float
        Gaussian sigma (crop pixels) applied to the model output before thresholding (0 = none).
    threshold : float
        Threshold of the smoothed output (calibrated after training to match the training cells' mean area).
    min_solidity : float
        Masks less convex than this are redrawn (0, the default, keeps every shape: on the shipped model a filter
        at 0.877 brought the solidity distribution closer to the real one but eccentricity and perimeter²/area
        further away, because real nuclei have a non-convex tail too; benchmarks/results/
        shape_realism_min_solidity.md).

    Examples
    --------
    >>> pipe = MaskDiffusionPipeline.from_pretrained("weights/sample")  # doctest: +SKIP
    >>> out = pipe(8, num_inference_steps=20, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> out.masks.shape  # doctest: +SKIP
    (8, 32, 32)
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler, pixel_scale: float = 1.0, min_area: int = 12,
                 smoothing: float = 0.0, threshold: float = 0.0, min_solidity: float = 0.0):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(pixel_scale=float(pixel_scale), min_area=int(min_area), smoothing=float(smoothing),
                                threshold=float(threshold), min_solidity=float(min_solidity))

    def use_sampler(self, name: str) -> None:
        """Switch the sampler to "ddim" or "dpm" (DPM-Solver++), keeping the noise schedule."""
        if name not in SAMPLERS:
            raise CellcascadeError(f"sampler must be one of {sorted(SAMPLERS)}, not {name!r}")
        self.scheduler = SAMPLERS[name].from_config(self.scheduler.config)

    @torch.no_grad()
    def denoise(self, batch_size: int, num_inference_steps: int, generator: torch.Generator | None) -> np.ndarray:
        """Run the sampler once; return raw outputs, float32 (N, S, S) in [-1, 1]."""
        size = self.unet.config.sample_size
        x = torch.randn((batch_size, 1, size, size), generator=generator).to(self.device)
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.scheduler.timesteps:
            noise = self.unet(x, t).sample
            x = self.scheduler.step(noise, t, x).prev_sample
        return x.clamp(-1, 1)[:, 0].float().cpu().numpy()

    @torch.no_grad()
    def __call__(
        self,
        num_masks: int = 16,
        num_inference_steps: int = 20,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        max_rounds: int = 20,
        progress: bool = False,
    ) -> MaskOutput:
        """Sample `num_masks` accepted masks (degenerate samples are redrawn, at most `max_rounds` batches)."""
        if num_masks < 1:
            raise CellcascadeError(f"number of masks must be positive, not {num_masks}")
        if num_inference_steps < 1:
            raise CellcascadeError(f"number of sampling steps must be positive, not {num_inference_steps}")
        accepted: list[np.ndarray] = []
        accepted_soft: list[np.ndarray] = []
        rejected = 0
        bar = tqdm(total=num_masks, desc="sampling masks", disable=not progress)
        for _ in range(max_rounds):
            if len(accepted) >= num_masks:
                break
            raw = self.denoise(min(batch_size, max(1, num_masks - len(accepted))), num_inference_steps, generator)
            for soft in smooth_output(raw, self.config.smoothing, self.config.threshold):
                mask = clean_mask(soft, self.config.min_area, min_solidity=self.config.min_solidity)
                if mask is None:
                    rejected += 1
                elif len(accepted) < num_masks:
                    accepted.append(mask)
                    accepted_soft.append(np.where(mask, np.maximum(soft, 1e-3), np.minimum(soft, 0)))
                    bar.update(1)
        bar.close()
        if len(accepted) < num_masks:
            raise CellcascadeError(f"the mask model produced only {len(accepted)} usable masks of {num_masks}: it needs more training")
        return MaskOutput(masks=np.stack(accepted), soft=np.stack(accepted_soft).astype(np.float32), pixel_scale=self.config.pixel_scale, rejected=rejected)


def load_mask_pipeline(path, device: str = "cpu") -> MaskDiffusionPipeline:
    """Load a saved mask model folder (safetensors only, checked first); raise CellcascadeError if unusable."""
    from diffusers.utils import logging as diffusers_logging

    from cellcascade.io.model_folder import check_pipeline_folder

    folder = check_pipeline_folder(path, "MaskDiffusionPipeline")
    diffusers_logging.disable_progress_bar()
    try:
        pipe = MaskDiffusionPipeline.from_pretrained(folder, use_safetensors=True)
    except Exception as exc:  # diffusers raises several types for damaged folders
        raise CellcascadeError(f"{folder}: cannot load the mask model ({exc})".splitlines()[0]) from None
    finally:
        diffusers_logging.enable_progress_bar()
    return pipe.to(device)
