"""One training loop for every denoising stage, built on ``accelerate``: EMA, periodic checkpoints, exact resume.

Every random draw of step ``s`` (batch indices, augmentation, timesteps, noise) comes from a generator seeded with
``(seed, s, process)``, so a run that is stopped and resumed from a checkpoint takes exactly the same steps as one
that never stopped. Checkpoints are safetensors + JSON only (the optimizer state is flattened to tensors): no
pickles, so a checkpoint folder from a stranger cannot run code.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cellcascade.devices import resolve_device
from cellcascade.errors import CellcascadeError

CHECKPOINT_DIR = "checkpoint"
# What the network learns to predict, read from the noise scheduler's config: the noise ("epsilon", the mask stage),
# the velocity ("v_prediction", the texture stage: it keeps the image's mean level right at the noisiest steps) or the
# clean sample itself ("sample", an option of the multiview stage: nearly determined binary targets).
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class TrainConfig:
    """Training hyper-parameters (all JSON-serialisable; stored in every checkpoint)."""

    steps: int = 4000
    batch_size: int = 32
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    seed: int = 0


def denoising_target(noise_scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the network must output for ``noise_scheduler.add_noise(clean, noise, timesteps)``, by prediction type.

    clean, noise : Tensor float32 (B, C, H, W); timesteps : Tensor int64 (B,). Returns a tensor like `clean`.
    """
    kind = noise_scheduler.config.prediction_type
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(clean, noise, timesteps)
    if kind == "sample":
        return clean
    if kind == "epsilon":
        return noise
    raise CellcascadeError(f"prediction type must be one of {PREDICTION_TYPES}, not {kind!r}")


def make_accelerator(device: str = "auto") -> Accelerator:
    """An Accelerator on `device` ("auto", "cpu" or "cuda"); under ``accelerate launch`` its settings win."""
    resolve_device(device)  # a clear error for an unknown name or a missing GPU
    return Accelerator(cpu=device == "cpu")


def _step_generator(seed: int, step: int, process: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + process)


def _dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Apply one of the 8 rotations/flips (k in 0..7, one per sample) to (N, C, H, W)."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        xi = torch.rot90(x[i], int(k[i]) % 4, dims=(-2, -1))
        out[i] = torch.flip(xi, dims=(-1,)) if k[i] >= 4 else xi
    return out


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return {k: v.contiguous().cpu() for k, v in tensors.items()}, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def train_denoiser(
    unet: UNet2DModel,
    noise_scheduler: DDPMScheduler,
    images: torch.Tensor,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    conditions: torch.Tensor | None = None,
    loss_weights: torch.Tensor | None = None,
    augment: bool = True,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
) -> UNet2DModel:
    """Train `unet` to denoise `images` (noise, velocity or clean sample: the scheduler's prediction type); return the
    EMA copy of the weights.

    Parameters
    ----------
    unet : UNet2DModel
        Takes ``C + C_cond`` input channels (noisy image, then conditions) and predicts ``C`` noise channels.
    noise_scheduler : DDPMScheduler
        Its ``add_noise`` makes the training inputs.
    images : Tensor float32 (N, C, H, W) in [-1, 1]
        Training samples.
    out_dir : path
        Checkpoints go to ``out_dir/checkpoint`` (replaced atomically); an existing one is resumed.
    config : TrainConfig
    conditions : Tensor float32 (N, C_cond, H, W), optional
        Extra channels concatenated to the noisy input (e.g. label geometry for the texture stage).
    loss_weights : Tensor float32 (N, 1, H, W), optional
        Per-pixel weights of the squared error (0 = unknown pixel, not learned).
    augment : bool
        Random flips/rot90 of each sample (applied jointly to images, conditions and weights).
    device : {"auto", "cpu", "cuda"}
    progress : bool
        Show a progress bar.
    stop_after : int, optional
        Stop (after checkpointing) once this step is reached: simulates an interruption in tests.

    Returns
    -------
    UNet2DModel with the EMA weights, on the CPU, in eval mode.
    """
    out_dir = Path(out_dir)
    accelerator = make_accelerator(device)
    n = images.shape[0]
    if noise_scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise CellcascadeError(f"prediction type must be one of {PREDICTION_TYPES}, not {noise_scheduler.config.prediction_type!r}")
    if n == 0:
        raise CellcascadeError("no training samples")
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=0.75)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    start = _resume(out_dir / CHECKPOINT_DIR, unet, ema, optimizer, config)
    model, optimizer = accelerator.prepare(unet, optimizer)
    ema.to(accelerator.device)
    lr_at = lambda s: config.learning_rate * min(1.0, (s + 1) / max(1, config.warmup_steps))  # noqa: E731
    bar = tqdm(total=config.steps, initial=start, desc="training", disable=not (progress and accelerator.is_main_process))
    model.train()
    for step in range(start, config.steps):
        generator = _step_generator(config.seed, step, accelerator.process_index)
        index = torch.randint(0, n, (config.batch_size,), generator=generator)
        parts = [images[index]]
        if conditions is not None:
            parts.append(conditions[index])
        if loss_weights is not None:
            parts.append(loss_weights[index])
        batch = torch.cat(parts, dim=1)
        if augment:
            batch = _dihedral(batch, torch.randint(0, 8, (config.batch_size,), generator=generator))
        c = images.shape[1]
        clean = batch[:, :c]
        cond = batch[:, c : c + (conditions.shape[1] if conditions is not None else 0)]
        weight = batch[:, -1:] if loss_weights is not None else None
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (config.batch_size,), generator=generator)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        inputs = torch.cat([noisy, cond], dim=1).to(accelerator.device)
        prediction = model(inputs, timesteps.to(accelerator.device)).sample
        target = denoising_target(noise_scheduler, clean, noise, timesteps)
        error = F.mse_loss(prediction, target.to(accelerator.device), reduction="none")
        if weight is not None:
            weight = weight.to(accelerator.device)
            loss = (error * weight).sum() / (weight.sum() * c).clamp_min(1.0)
        else:
            loss = error.mean()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.step(accelerator.unwrap_model(model).parameters())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == config.steps or done == stop_after:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _save_checkpoint(out_dir / CHECKPOINT_DIR, accelerator.unwrap_model(model), ema, optimizer, config, done)
        if done == stop_after:
            break
    bar.close()
    final = accelerator.unwrap_model(model)
    final.to("cpu")
    ema.to("cpu")
    ema.copy_to(final.parameters())
    return final.eval()


def _save_checkpoint(folder: Path, unet: UNet2DModel, ema: EMAModel, optimizer, config: TrainConfig, step: int) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous().cpu() for k, v in unet.state_dict().items()}, tmp / "model.safetensors")
    names = [name for name, _ in unet.named_parameters()]
    save_file({name: p.detach().contiguous().cpu() for name, p in zip(names, ema.shadow_params)}, tmp / "ema.safetensors")
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, tmp / "optimizer.safetensors")
    state = {"step": step, "ema_optimization_step": ema.optimization_step, "config": asdict(config), "optimizer": meta}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _resume(folder: Path, unet: UNet2DModel, ema: EMAModel, optimizer, config: TrainConfig) -> int:
    """Load a checkpoint into the objects if one exists; return the step to continue from (0 if none)."""
    if not (folder / "state.json").exists():
        return 0
    state = json.loads((folder / "state.json").read_text())
    saved = dict(state["config"])
    current = asdict(config)
    # The step count and checkpoint interval may be changed to train longer; everything else must match.
    for key in ("steps", "checkpoint_every"):
        saved.pop(key), current.pop(key)
    if saved != current:
        raise CellcascadeError(f"{folder}: checkpoint was made with another configuration {saved}; remove it or use a new output folder")
    unet.load_state_dict(load_file(folder / "model.safetensors"))
    shadow = load_file(folder / "ema.safetensors")
    ema.shadow_params = [shadow[name].clone() for name, _ in unet.named_parameters()]
    ema.optimization_step = state["ema_optimization_step"]
    optimizer.load_state_dict(_unflatten_optimizer(load_file(folder / "optimizer.safetensors"), state["optimizer"]))
    return int(state["step"])
