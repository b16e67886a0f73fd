"""The cascade: mask model (1) + population synthesis (4) + texture model (5) + imaging model (6), in 2D; with the
optional multiview model (2, reconstruction 3) also in 3D (:mod:`cellcascade.pipelines.volume`).

This module only composes the stage pipelines. A cascade is a folder::

    MODEL/
      cascade.json        index: format version, stage folders, what it was trained on
      masks/              MaskDiffusionPipeline (model_index.json, unet/*.safetensors, scheduler/)
      texture/            TexturePipeline (same layout)
      imaging/config.json ImagingModel parameters
      multiview/          MultiviewPipeline (optional: the 3D stage; same layout + training.json)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cellcascade.data import AnnotatedImage, require_ndim
from cellcascade.errors import CellcascadeError
from cellcascade.imaging import ImagingModel
from cellcascade.imaging.brightness import vary_cell_brightness
from cellcascade.imaging.noise import add_noise, fit_noise
from cellcascade.io.manifest import package_version
from cellcascade.models.multiview import check_multiview_preset
from cellcascade.models.unet import check_preset_size
from cellcascade.pipelines.labels import generate_label_images
from cellcascade.pipelines.mask import MaskDiffusionPipeline, load_mask_pipeline
from cellcascade.pipelines.multiview import MultiviewPipeline, load_multiview_pipeline
from cellcascade.pipelines.texture import TexturePipeline, load_texture_pipeline
from cellcascade.population.field_of_view import crop_field_of_view
from cellcascade.training.loop import TrainConfig
from cellcascade.training.mask import train_mask_model
from cellcascade.training.multiview import MultiviewDataConfig, train_multiview_model
from cellcascade.training.texture import train_texture_model

INDEX = "cascade.json"
FORMAT = "cellcascade-cascade-2d"


@dataclass
class GeneratedSample:
    """One synthetic image.

    Attributes
    ----------
    image : ndarray (Y, X), the real data's dtype
    labels : ndarray uint16 (Y, X), 0 = background, ids 1..n
    cells : list of dict, the per-cell table (id, centroid, source, rotation, flipped, scale, clustered, cut,
        visible_fraction)
    seed : int, the sample's own seed
    """

    image: np.ndarray
    labels: np.ndarray
    cells: list
    seed: int


def finish_image(image: np.ndarray, imaging: ImagingModel, rng: np.random.Generator) -> np.ndarray:
    """Stage 6 on a texture-model output: add the noise it lacks, then round and clip to the real dtype.

    The texture model already draws background and (some) noise; the variance still missing relative to the fitted
    Poisson-Gaussian model is ``max(0, target(mean) - present(mean))``, with ``present`` measured on the image
    itself by the same estimator that fitted the model.

    Parameters
    ----------
    image : ndarray float32 (Y, X), data units
    imaging : ImagingModel
    rng : numpy Generator

    Returns
    -------
    ndarray (Y, X) of ``imaging.dtype``
    """
    image = np.asarray(image, np.float32)
    try:
        present_gain, present_offset = fit_noise([image])
    except (CellcascadeError, ValueError):  # too few flat pixels to measure: assume the image holds no noise
        present_gain, present_offset = 0.0, 0.0
    gain = max(imaging.noise_gain - present_gain, 0.0)
    offset = max(imaging.noise_offset - present_offset, 0.0)
    noisy = add_noise(np.maximum(image, 0), gain, offset, rng) if gain > 0 or offset > 0 else image
    if imaging.quantization_step > 0:
        noisy = imaging.quantization_step * np.rint(noisy / imaging.quantization_step)
    low, high = imaging.output_range()
    if low is not None:
        noisy = np.clip(noisy, low, high)
    dtype = np.dtype(imaging.dtype)
    return (np.rint(noisy) if dtype.kind in "ui" else noisy).astype(dtype)


class Cascade:
    """A fitted 2D cascade; ``generate`` makes (image, labels) pairs.

    Examples
    --------
    >>> cascade = Cascade.load("my-model")  # doctest: +SKIP
    >>> sample = cascade.generate(0, (256, 256), seed=1)  # doctest: +SKIP
    >>> sample.image.shape, sample.labels.dtype  # doctest: +SKIP
    ((256, 256), dtype('uint16'))
    """

    def __init__(self, masks: MaskDiffusionPipeline, texture: TexturePipeline, imaging: ImagingModel, info: dict,
                 multiview: MultiviewPipeline | None = None):
        self.masks = masks
        self.texture = texture
        self.imaging = imaging
        self.info = info
        self.multiview = multiview

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Cascade":
        """Load a cascade folder (index checked; stage folders checked by their own loaders)."""
        path = Path(path)
        if not path.is_dir():
            raise CellcascadeError(f"{path}: model folder not found")
        index_file = path / INDEX
        if not index_file.is_file():
            raise CellcascadeError(f"{path}: not a cellcascade cascade folder ({INDEX} missing)")
        try:
            info = json.loads(index_file.read_text())
        except json.JSONDecodeError as exc:
            raise CellcascadeError(f"{index_file}: invalid JSON ({exc})") from None
        if info.get("format") != FORMAT:
            raise CellcascadeError(f"{index_file}: format {info.get('format')!r} is not {FORMAT!r}")
        imaging_file = path / "imaging" / "config.json"
        if not imaging_file.is_file():
            raise CellcascadeError(f"{imaging_file}: missing")
        imaging = ImagingModel.from_dict(json.loads(imaging_file.read_text()))
        if info.get("texture_kind", "unet") == "controlnet":
            from cellcascade.pipelines.controlnet import load_controlnet_texture

            texture = load_controlnet_texture(path / "texture", device=device)
        else:
            texture = load_texture_pipeline(path / "texture", device)
        multiview = None
        if "multiview" in info.get("stages", {}):
            multiview = load_multiview_pipeline(path / info["stages"]["multiview"], device)
        return cls(load_mask_pipeline(path / "masks", device), texture, imaging, info, multiview)

    def generate(
        self,
        index: int,
        size: tuple[int, int],
        *,
        seed: int = 0,
        cells: int | tuple[int, int] = (40, 49),
        density: float | None = None,
        clustering: float = 0.3,
        scale_range: tuple[float, float] = (0.9, 1.1),
        overlap_tolerance: float = 0.0,
        shapes_per_image: int = 16,
        mask_steps: int = 20,
        texture_steps: int = 20,
        border_margin: int = 0,
        brightness_spread: float = 0.0,
    ) -> GeneratedSample:
        """Sample `index` of a run with `seed`: labels from stages 1+4, intensities from stages 5+6.

        Sample `index` depends only on (`seed`, `index`) and the options, never on how many samples a run makes or
        which worker makes it.

        With `border_margin` > 0 the scene is made that many pixels larger on every side (`density` keeps its
        meaning; a `cells` count is scaled by the area ratio, so the image shows about that many whole or cut
        cells), textured and finished whole, then cut to `size`: cells cross the image border as in a
        microscope's field of view (:func:`cellcascade.population.field_of_view.crop_field_of_view`; the per-cell
        table then says which cells are ``cut``).

        With `brightness_spread` > 0 each cell's signal is scaled by its own log-normal factor before the noise is
        added (:func:`cellcascade.imaging.brightness.vary_cell_brightness`): dimmer and brighter cells than the
        texture model draws by itself.
        """
        margin = int(border_margin)
        if margin < 0:
            raise CellcascadeError(f"border margin must be at least 0 pixels, not {border_margin}")
        scene = (size[0] + 2 * margin, size[1] + 2 * margin)
        if margin and density is None:
            cells = _scaled_count(cells, scene[0] * scene[1] / (size[0] * size[1]))
        labels = generate_label_images(
            self.masks, 1, scene, cells=cells, density=density, clustering=clustering, scale_range=scale_range,
            overlap_tolerance=overlap_tolerance, shapes_per_image=shapes_per_image,
            num_inference_steps=mask_steps, seed=seed, first_index=index, progress=False,
        )
        sample_seed = labels.seeds[0]
        generator = torch.Generator().manual_seed(sample_seed + 1)
        texture = self.texture(labels.labels[0], texture_steps, generator=generator).image
        if brightness_spread:
            texture = vary_cell_brightness(texture, labels.labels[0], spread=brightness_spread,
                                           background=self.imaging.background_level,
                                           rng=np.random.default_rng(sample_seed + 3))
        image = finish_image(texture, self.imaging, np.random.default_rng(sample_seed + 2))
        label_image, table = crop_field_of_view(labels.labels[0], labels.cells[0], margin)  # adds "cut" to the table
        image = image[margin : margin + size[0], margin : margin + size[1]]
        return GeneratedSample(image=image, labels=label_image, cells=table, seed=sample_seed)


def _scaled_count(cells: int | tuple[int, int], ratio: float) -> tuple[int, int]:
    """A cell count (n or (min, max)) times `ratio`, rounded."""
    low, high = (cells, cells) if isinstance(cells, (int, np.integer)) else cells
    return int(round(low * ratio)), int(round(high * ratio))


@dataclass
class MultiviewStage:
    """What :func:`fit_cascade` needs to train the 3D stage.

    Attributes
    ----------
    data : MultiviewDataConfig
        Views, silhouette size, the prior's axial ratio, the voxel spacing of `volumes`.
    config : TrainConfig
    volumes : list of AnnotatedImage (3D), optional
        The user's 3D masks, if any (their cells are rendered to silhouettes besides the prior's).
    prediction_type : {"sample", "epsilon"}
        What the multiview network predicts: the clean side views (x0) or the noise.
    view_chords : bool
        Give the network each view's chord profile of the top view.
    """

    data: MultiviewDataConfig
    config: TrainConfig
    volumes: list = field(default_factory=list)
    prediction_type: str = "sample"
    view_chords: bool = True


def fit_cascade(
    items: list[AnnotatedImage],
    out: str | Path,
    *,
    mask_config: TrainConfig | None = None,
    texture_config: TrainConfig | None = None,
    crop_size: int = 32,
    patch_size: int = 64,
    preset: str = "cpu",
    device: str = "auto",
    progress: bool = True,
    stop_after: dict | None = None,
    pretrained: str | Path | None = None,
    multiview: "MultiviewStage | None" = None,
) -> Path:
    """Train every 2D stage on `items` into the cascade folder `out`.

    Work goes to ``<out>.partial/``; each stage is skipped if already complete there and resumes from its checkpoint
    otherwise, so running the same call again after an interruption loses nothing. `out` appears only when complete.

    Parameters
    ----------
    items : list of AnnotatedImage (2D, sparse or dense)
    out : path, must not exist
    mask_config, texture_config : TrainConfig
    crop_size : int, side of the mask model's crops
    patch_size : int, side of the texture model's training patches
    preset : {"tiny", "cpu", "gpu"}
    device : {"auto", "cpu", "cuda"}
    stop_after : dict, optional
        ``{"masks": step}``, ``{"texture": step}`` or ``{"multiview": step}``: stop that stage after this step
        (tests of resume).
    pretrained : path, optional
        A local diffusers-format Stable Diffusion folder: the texture stage is then a ControlNet trained on it
        (:func:`cellcascade.pipelines.controlnet.train_controlnet_texture`, the paper's set-up; ``texture_config``
        gives its steps, batch size, learning rate and seed) instead of the from-scratch conditional UNet. That
        stage is written when complete (no step-level resume).
    multiview : MultiviewStage, optional
        Also train the 3D stage (multiview model) from the 2D masks of `items` through the shape prior, plus any
        3D masks in ``multiview.volumes``; resumable like the others.

    Returns
    -------
    Path of the cascade folder (or of the partial folder if stopped).
    """
    require_ndim(items, 2)
    out = Path(out)
    if out.exists():
        raise CellcascadeError(f"{out}: already exists; choose another output folder or remove it")
    if not out.absolute().parent.is_dir():
        raise CellcascadeError(f"{out.absolute().parent}: folder does not exist")
    check_preset_size(preset, crop_size, "crop size")  # bad options fail before anything is written
    check_preset_size(preset, patch_size, "patch size")
    if multiview is not None:
        check_multiview_preset(preset, multiview.data.size)
        require_ndim(multiview.volumes, 3)
    stop_after = stop_after or {}
    work = out.with_name(out.name + ".partial")
    work.mkdir(exist_ok=True)
    if not (work / "masks").exists():
        if train_mask_model(items, work / "masks", crop_size=crop_size, preset=preset, config=mask_config,
                            device=device, progress=progress, stop_after=stop_after.get("masks")) is None:
            return work
    if pretrained is not None and not (work / "texture").exists():
        from cellcascade.pipelines.controlnet import train_controlnet_texture

        config = texture_config or TrainConfig()
        train_controlnet_texture(pretrained, items, work / "texture", patch_size=patch_size, steps=config.steps,
                                 batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed,
                                 device=device, progress=progress)
    if not (work / "texture").exists():
        if train_texture_model(items, work / "texture", patch_size=patch_size, preset=preset, config=texture_config,
                               device=device, progress=progress, stop_after=stop_after.get("texture")) is None:
            return work
    if multiview is not None and not (work / "multiview").exists():
        if train_multiview_model(list(items) + list(multiview.volumes), work / "multiview", data=multiview.data,
                                 preset=preset, prediction_type=multiview.prediction_type,
                                 view_chords=multiview.view_chords, config=multiview.config,
                                 device=device, progress=progress, stop_after=stop_after.get("multiview")) is None:
            return work
    imaging = ImagingModel.fit(items)
    (work / "imaging").mkdir(exist_ok=True)
    (work / "imaging" / "config.json").write_text(json.dumps(imaging.to_dict(), indent=1))
    info = {
        "format": FORMAT,
        "cellcascade_version": package_version(),
        "stages": {"masks": "masks", "texture": "texture", "imaging": "imaging",
                   **({"multiview": "multiview"} if multiview is not None else {})},
        "texture_kind": "unet" if pretrained is None else "controlnet",
        "trained_on": sorted({item.name for item in items}),
        "dense": all(item.dense for item in items),
        "dtype": imaging.dtype,
    }
    (work / INDEX).write_text(json.dumps(info, indent=1))
    work.rename(out)
    return out

