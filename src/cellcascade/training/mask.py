"""Train the single-cell mask model (stage 1) on the annotated cells of a dataset."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from cellcascade.data import AnnotatedImage, extract_crops, require_ndim
from cellcascade.errors import CellcascadeError
from cellcascade.models.unet import build_unet, check_preset_size
from cellcascade.pipelines.mask import MaskDiffusionPipeline, calibrate_threshold
from cellcascade.training.loop import TrainConfig, train_denoiser

CALIBRATION_SAMPLES = 64
NOISE_SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon"}


def shape_training_masks(items: list[AnnotatedImage], crop_size: int) -> tuple[np.ndarray, float]:
    """Binary masks of every whole annotated cell, centred; returns (bool (N, S, S), pixel_scale)."""
    require_ndim(items, 2)
    crops = [c for c in extract_crops(items, size=crop_size, scale="auto") if c.usable_for_shape]
    if len(crops) < 2:
        raise CellcascadeError(f"only {len(crops)} whole annotated cells found (cells cut by the border are left out); at least 2 are needed")
    return np.stack([c.mask for c in crops]), crops[0].scale


def train_mask_model(
    items: list[AnnotatedImage],
    out_dir: str | Path,
    *,
    crop_size: int = 32,
    preset: str = "cpu",
    config: TrainConfig | None = None,
    device: str = "auto",
    smoothing: float = 1.5,
    progress: bool = True,
    stop_after: int | None = None,
) -> MaskDiffusionPipeline | None:
    """Train a mask model on the whole annotated cells of `items` and save it to `out_dir`.

    Checkpoints go to ``<out_dir>.checkpoint/`` and are resumed if present; the finished model is written to a
    temporary folder and renamed to `out_dir`, so `out_dir` exists only when complete.

    Parameters
    ----------
    items : list of AnnotatedImage (2D)
    out_dir : path
        Must not exist yet.
    crop_size : int
        Side of the generated masks; one scale factor for the whole set makes the largest cell fit.
    preset : {"tiny", "cpu", "gpu"}
        UNet size.
    config : TrainConfig
    device : {"auto", "cpu", "cuda"}
    smoothing : float
        Gaussian sigma (crop pixels) applied to generated outputs before thresholding; see
        :func:`cellcascade.pipelines.mask.smooth_output`.
    stop_after : int, optional
        Stop after this step, leaving the checkpoint (for tests of resume). Returns None then.

    Returns
    -------
    MaskDiffusionPipeline with the EMA weights (or None if stopped early).
    """
    out_dir = Path(out_dir)
    config = config or TrainConfig()
    check_preset_size(preset, crop_size, "crop size")
    if out_dir.exists():
        raise CellcascadeError(f"{out_dir}: already exists; choose another output folder or remove it")
    masks, pixel_scale = shape_training_masks(items, crop_size)
    images = torch.from_numpy(masks[:, None].astype(np.float32) * 2 - 1)
    torch.manual_seed(config.seed)  # the initial weights
    unet = build_unet(crop_size, 1, 1, preset=preset)
    work = out_dir.with_name(out_dir.name + ".checkpoint")
    unet = train_denoiser(
        unet, DDPMScheduler(**NOISE_SCHEDULE), images, work, config, device=device, progress=progress, stop_after=stop_after
    )
    if stop_after is not None and stop_after < config.steps:
        return None
    min_area = max(4, int(0.25 * masks.sum(axis=(1, 2)).min()))
    pipe = MaskDiffusionPipeline(unet, DDIMScheduler(**NOISE_SCHEDULE), pixel_scale=pixel_scale, min_area=min_area,
                                 smoothing=smoothing)
    # Calibrate the output threshold on generated samples so their mean area matches the training cells'.
    raw = pipe.denoise(CALIBRATION_SAMPLES, 20, torch.Generator().manual_seed(config.seed))
    pipe.register_to_config(threshold=calibrate_threshold(raw, smoothing, float(masks.sum(axis=(1, 2)).mean())))
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    training = {"train_config": asdict(config), "crop_size": crop_size, "preset": preset, "cells": int(len(masks)),
                "smoothing": smoothing, "calibrated_threshold": pipe.config.threshold,
                "sources": sorted({item.name for item in items})}
    (tmp / "training.json").write_text(json.dumps(training, indent=1))
    tmp.rename(out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return pipe
