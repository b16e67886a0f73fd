"""Train the multiview model (stage 2) on silhouettes of 3D cells: the user's 3D masks and/or the built-in prior.

Training pairs
--------------
The 3D cells are (a) the user's 3D instance masks, if any, and (b) shapes of the built-in prior
(:func:`~cellcascade.shapes3d.sample_shapes`) drawn from the user's 2D masks with a configurable axial ratio, at
the voxel spacing ``(dz, dy, dx)``. Each cell gives samples, each rotated about z by a random angle and mirrored
(x -> -x) with probability 1/2:

* condition: the top view, i.e. the cell's z-projection seen in its frame by
  :func:`~cellcascade.pipelines.multiview.top_view` -- the very function that frames a 2D mask when generating, so
  training and use see the same kind of input;
* targets: the K side views, rendered by :func:`~cellcascade.reconstruction.render_silhouettes` in the same frame
  (centre: the projection's centroid in (y, x), the cell's centroid in z). A rotation about z only shifts the side
  views' azimuths, so it is exact (no resampling of the volume); the top view is resampled rotated.

Targets and conditions are binary, scaled to [-1, 1]. The frame's margin (its half-width over the 2D radius) is the
smallest that holds every training cell in every view (tall cells need more than the default 1.15); it is stored
in the pipeline's config so that generation frames 2D masks the same way.

The network and the loop are the shared ones: :class:`~cellcascade.models.multiview.MultiviewUNet` takes the K
side views as the loop's "images" and the top view as its "condition" channel; the loop's flips/rot90
augmentation is off (rotating every view in its image plane is not a 3D rotation), the rotations above replace it.
The network is trained by default to predict the clean side views (x0, ``prediction_type="sample"``) rather than the
noise, and gets the top view's chord profile seen from each view (``view_chords=True``), which it computes from the
top view itself, so data and loop are the same either way. On the shape-from-one-view benchmark (1500 steps, preset
cpu, 3 seeds) this pair lifted real nuclei best: mean IoU 0.801 vs 0.782 for noise prediction without chords, 0.779
with chords alone and 0.790 with x0 alone (``benchmarks/results/shape_from_one_view*.md``). Nearly determined binary
targets suit x0 prediction: its side views on the training distribution matched the true views' size within 0.5 px
after 200 steps, where the noise-predicting model's were still 2 px too large after 1500.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy import ndimage as ndi

from cellcascade.data import AnnotatedImage
from cellcascade.errors import CellcascadeError
from cellcascade.models.multiview import build_multiview_unet, check_multiview_preset
from cellcascade.pipelines.multiview import MultiviewPipeline, mask_frame_2d, top_view
from cellcascade.reconstruction.cameras import DEFAULT_MARGIN, Views, render_silhouettes, ring_views
from cellcascade.shapes3d import sample_shapes
from cellcascade.training.loop import CHECKPOINT_DIR, TrainConfig, denoising_target, train_denoiser
from cellcascade.training.mask import NOISE_SCHEDULE

MULTIVIEW_PREDICTION_TYPES = ("epsilon", "sample")
DATA_FILE = "multiview_data.json"  # the data options of a checkpointed run (a resumed run must use the same)


@dataclass
class MultiviewData:
    """Training pairs of the multiview model.

    Attributes
    ----------
    side : Tensor float32 (N, K, S, S)
        Side-view silhouettes in {-1, 1} (the targets).
    top : Tensor float32 (N, 1, S, S)
        Top views in {-1, 1} (the conditions).
    margin : float
        Frame half-width over each cell's 2D radius.
    from_prior, from_3d : int
        Samples made from prior shapes and from the user's 3D masks.
    """

    side: torch.Tensor
    top: torch.Tensor
    margin: float
    from_prior: int
    from_3d: int


@dataclass
class MultiviewDataConfig:
    """How training pairs are made (all JSON-serialisable; stored with the model).

    Attributes
    ----------
    size : int
        Silhouette side S.
    n_side : int
        K, side views evenly spaced over 180° of azimuth.
    elevation : float
        Degrees above the xy plane of the side views.
    spacing : (float, float, float)
        Voxel size (dz, dy, dx) of the 3D masks and of the prior's shapes; the 2D masks' pixel size is (dy, dx).
    axial_ratio : float or (float, float)
        The prior's z extent / xy equivalent diameter, or a (min, max) range drawn per shape.
    shapes_per_mask : int
        Prior shapes drawn per 2D mask (0: no prior).
    rotations_per_volume : int
        Samples (random rotation about z, random mirror) per user 3D mask.
    deformation : float
        The prior's smooth random deformation (root mean square of the log radius).
    margin : float, optional
        Fixed frame margin; default: the smallest that holds every training cell (at least 1.15).
    seed : int
    """

    size: int = 32
    n_side: int = 8
    elevation: float = 0.0
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    axial_ratio: float | tuple[float, float] = (0.6, 1.0)
    shapes_per_mask: int = 4
    rotations_per_volume: int = 8
    deformation: float = 0.1
    margin: float | None = None
    seed: int = 0

    def views(self) -> Views:
        """The K side views."""
        return ring_views(self.n_side, self.elevation, top=False)


def cell_masks(labels: np.ndarray, exclude_border: bool = True, min_size: int = 4) -> list[np.ndarray]:
    """One bool crop per cell of an instance label image, in label order.

    Parameters
    ----------
    labels : ndarray int, shape (Y, X) or (Z, Y, X)
        0 = background.
    exclude_border : bool
        Leave out cells that touch the array border (cut cells).
    min_size : int
        Leave out cells with fewer pixels (voxels).

    Returns
    -------
    list of ndarray bool, each (Y, X) or (Z, Y, X), cropped to the cell's bounding box.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
        labels = labels.astype(np.int64)  # whole numbers stored as floats, as the readers accept
    if labels.ndim not in (2, 3) or labels.dtype.kind not in "iu":
        raise CellcascadeError(f"labels must be an integer (Y, X) or (Z, Y, X) array, got {labels.dtype} of {labels.shape}")
    out = []
    for index, box in enumerate(ndi.find_objects(labels)):
        if box is None:
            continue
        if exclude_border and any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape)):
            continue
        mask = labels[box] == index + 1
        if mask.sum() >= min_size:
            out.append(mask)
    return out


def cell_frame(volume: np.ndarray, spacing) -> tuple[np.ndarray, float, float]:
    """The frame of a 3D cell as generation sees it: from its z-projection.

    Parameters
    ----------
    volume : ndarray bool, shape (Z, Y, X)
    spacing : (dz, dy, dx)

    Returns
    -------
    centre : ndarray float64 (3,)
        (z centroid, projection centroid y, x) in index coordinates.
    radius_2d : float
        The projection's radius (:func:`~cellcascade.pipelines.multiview.mask_frame_2d`).
    radius_3d : float
        Largest physical distance from `centre` to a voxel's far corner.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    (cy, cx), radius_2d = mask_frame_2d(volume.any(axis=0), spacing[1:])
    index = np.argwhere(volume).astype(np.float64)
    centre = np.array([index[:, 0].mean(), cy, cx])
    radius_3d = np.sqrt((((np.abs(index - centre) + 0.5) * spacing) ** 2).sum(axis=1)).max()
    return centre, float(radius_2d), float(radius_3d)


def frame_margin(volumes, spacing) -> float:
    """The smallest frame margin (>= the default 1.15) that holds every 3D cell of `volumes` in every view."""
    ratios = [r3 / r2 for _, r2, r3 in (cell_frame(v, spacing) for v in volumes)]
    return float(DEFAULT_MARGIN * max([1.0] + ratios))


def render_pair(volume: np.ndarray, views: Views, spacing, size: int, margin: float, rotation: float = 0.0,
                mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One training pair: a 3D cell, rotated about z by `rotation` degrees and optionally mirrored, seen in its frame.

    Parameters
    ----------
    volume : ndarray bool, shape (Z, Y, X)
    views : Views
        The K side views.
    spacing : (dz, dy, dx)
    size : int
    margin : float
    rotation : float
        Degrees, from +x towards +y.
    mirror : bool
        Mirror x -> -x first.

    Returns
    -------
    top : ndarray bool, shape (S, S)
    side : ndarray float32 0/1, shape (K, S, S)
    """
    volume = np.asarray(volume, dtype=bool)
    # A copy in C order: render_silhouettes hands the array to torch, which refuses negative strides (rot90, flips).
    volume = np.ascontiguousarray(volume[:, :, ::-1] if mirror else volume)
    spacing = np.asarray(spacing, dtype=np.float64)
    centre, _, _ = cell_frame(volume, spacing)
    top = top_view(volume.any(axis=0), size, spacing[1:], margin, rotation=rotation)
    # The cell turned by `rotation` seen from azimuth a is the cell seen from azimuth a - rotation (module notes).
    shifted = Views(views.elevation, tuple(a - rotation for a in views.azimuth))
    side = render_silhouettes(volume, shifted, spacing, size, half_width=top.half_width, centre=centre)
    return top.image, side


def build_training_set(masks_2d=(), volumes_3d=(), config: MultiviewDataConfig | None = None) -> MultiviewData:
    """Training pairs from 2D masks (through the prior) and 3D masks (see the module notes).

    Parameters
    ----------
    masks_2d : sequence of ndarray bool, each (Y, X)
        Single-cell 2D masks, pixel size ``config.spacing[1:]``.
    volumes_3d : sequence of ndarray bool, each (Z, Y, X)
        Single-cell 3D masks, voxel size ``config.spacing``.
    config : MultiviewDataConfig

    Returns
    -------
    MultiviewData
    """
    config = config or MultiviewDataConfig()
    for name in ("shapes_per_mask", "rotations_per_volume"):
        if int(getattr(config, name)) < 0:
            raise CellcascadeError(f"{name} must be >= 0, got {getattr(config, name)}")
    rng = np.random.default_rng(config.seed)
    masks_2d, volumes_3d = list(masks_2d), [np.asarray(v, dtype=bool) for v in volumes_3d]
    if any(v.ndim != 3 or not v.any() for v in volumes_3d):
        raise CellcascadeError("every 3D mask must be a non-empty (Z, Y, X) array")
    prior = []
    for _ in range(int(config.shapes_per_mask) if masks_2d else 0):
        prior += sample_shapes(masks_2d, config.axial_ratio, config.spacing, rng, deformation=config.deformation)
    cells = prior + [v for v in volumes_3d for _ in range(int(config.rotations_per_volume))]
    if not cells:
        raise CellcascadeError("no training cells: give 2D masks (with shapes_per_mask > 0) or 3D masks")
    margin = frame_margin(prior + volumes_3d, config.spacing) if config.margin is None else float(config.margin)
    views = config.views()
    tops, sides = [], []
    for volume in cells:
        top, side = render_pair(volume, views, config.spacing, config.size, margin, rotation=float(rng.uniform(0, 360)),
                                mirror=bool(rng.integers(0, 2)))
        tops.append(top)
        sides.append(side)
    scale = lambda a: torch.from_numpy(np.stack(a).astype(np.float32) * 2 - 1)  # noqa: E731
    return MultiviewData(side=scale(sides), top=scale(tops)[:, None], margin=margin, from_prior=len(prior),
                         from_3d=len(cells) - len(prior))


@torch.no_grad()
def denoising_loss(unet, scheduler, data: MultiviewData, samples: int = 32, seed: int = 0) -> float:
    """Mean squared error of the network's prediction (noise, velocity or clean views: the scheduler's type) on
    fixed samples, noise and evenly spread timesteps.

    A fixed yardstick for comparing weights (before/after training); the same seed gives the same draws.
    """
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(data.side.shape[0], generator=generator)[:samples]
    clean, top = data.side[index], data.top[index]
    noise = torch.randn(clean.shape, generator=generator)
    steps = scheduler.config.num_train_timesteps
    timesteps = torch.linspace(0, steps - 1, len(index)).round().long()
    noisy = scheduler.add_noise(clean, noise, timesteps)
    target = denoising_target(scheduler, clean, noise, timesteps)
    device = next(unet.parameters()).device
    prediction = unet(torch.cat([noisy, top], dim=1).to(device), timesteps.to(device)).sample
    return float(torch.mean((prediction.cpu() - target) ** 2))


def training_cells(items: list[AnnotatedImage]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The whole annotated cells of `items`: (2D masks of the 2D items, 3D masks of the 3D items)."""
    masks_2d, volumes_3d = [], []
    for item in items:
        (masks_2d if item.ndim == 2 else volumes_3d).extend(cell_masks(item.labels))
    return masks_2d, volumes_3d


def train_multiview_model(
    items: list[AnnotatedImage],
    out_dir: str | Path,
    *,
    data: MultiviewDataConfig | None = None,
    preset: str = "cpu",
    view_chords: bool = True,
    prediction_type: str = "sample",
    config: TrainConfig | None = None,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
) -> MultiviewPipeline | None:
    """Train a multiview model on the annotated cells of `items` and save it to `out_dir`.

    2D items give 2D masks, turned into 3D cells by the prior; 3D items (optional) give 3D masks. Checkpoints go to
    ``<out_dir>.checkpoint/`` and are resumed if present (same data options required); the finished model is written
    to a temporary folder and renamed to `out_dir`, so `out_dir` exists only when complete.

    Parameters
    ----------
    items : list of AnnotatedImage (2D and/or 3D)
        Cells touching the image border are left out.
    out_dir : path
        Must not exist yet.
    data : MultiviewDataConfig
        Views, size, spacing, axial ratio, samples per cell.
    preset : {"tiny", "cpu", "gpu"}
    view_chords : bool
        Give each view the top view's chord profile seen from it (:class:`~cellcascade.models.multiview.MultiviewUNet`).
    prediction_type : {"sample", "epsilon"}
        What the network predicts: the clean side views (x0, default) or the noise.
    config : TrainConfig
    device : {"auto", "cpu", "cuda"}
    progress : bool
    stop_after : int, optional
        Stop after this step, leaving the checkpoint (for tests of resume). Returns None then.

    Returns
    -------
    MultiviewPipeline with the EMA weights (or None if stopped early).
    """
    out_dir = Path(out_dir)
    data = data or MultiviewDataConfig()
    config = config or TrainConfig()
    check_multiview_preset(preset, data.size)
    if prediction_type not in MULTIVIEW_PREDICTION_TYPES:
        raise CellcascadeError(f"prediction type must be one of {MULTIVIEW_PREDICTION_TYPES}, not {prediction_type!r}")
    if out_dir.exists():
        raise CellcascadeError(f"{out_dir}: already exists; choose another output folder or remove it")
    masks_2d, volumes_3d = training_cells(items)
    if not masks_2d and not volumes_3d:
        raise CellcascadeError("no whole annotated cells found (cells cut by the border are left out)")
    options = {"data": _jsonable(asdict(data)), "preset": preset, "view_chords": bool(view_chords),
               "prediction_type": prediction_type}
    work = out_dir.with_name(out_dir.name + ".checkpoint")
    if (work / CHECKPOINT_DIR).exists() and (work / DATA_FILE).exists():
        saved = json.loads((work / DATA_FILE).read_text())
        if saved != options:
            raise CellcascadeError(
                f"{work}: checkpoint was made with other data options {saved}; remove it or use a new output folder"
            )
    pairs = build_training_set(masks_2d, volumes_3d, data)
    schedule = {**NOISE_SCHEDULE, "prediction_type": prediction_type}
    scheduler = DDPMScheduler(**schedule)
    torch.manual_seed(config.seed)  # the initial weights
    unet = build_multiview_unet(data.size, data.views(), preset, view_chords=bool(view_chords))
    initial_loss = denoising_loss(unet, scheduler, pairs)
    work.mkdir(parents=True, exist_ok=True)
    (work / DATA_FILE).write_text(json.dumps(options, indent=1))
    unet = train_denoiser(unet, scheduler, pairs.side, work, config, conditions=pairs.top, augment=False,
                          device=device, progress=progress, stop_after=stop_after)
    if stop_after is not None and stop_after < config.steps:
        return None
    pipe = MultiviewPipeline(unet, DDIMScheduler(**schedule), margin=pairs.margin)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    training = {"train_config": asdict(config), **options, "samples": int(pairs.side.shape[0]),
                "from_prior": pairs.from_prior, "from_3d": pairs.from_3d, "cells_2d": len(masks_2d),
                "cells_3d": len(volumes_3d), "margin": pairs.margin, "initial_loss": initial_loss,
                "final_loss": denoising_loss(unet, scheduler, pairs), "sources": sorted({item.name for item in items})}
    (tmp / "training.json").write_text(json.dumps(training, indent=1))
    tmp.rename(out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return pipe


def _jsonable(value):
    """Tuples to lists, recursively (what a JSON round trip gives), so saved and current options compare equal."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        raise CellcascadeError(f"option values must be finite, got {value}")
    return value
