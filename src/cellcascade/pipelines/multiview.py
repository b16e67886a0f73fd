"""Stage 2: multiview diffusion (the paper's SyncDreamer) -- a cell's 2D mask to K silhouettes around it, jointly.

The frame
---------
Silhouettes live in the normalised frame of :mod:`cellcascade.reconstruction.cameras`: pixel ``(i, j)`` of an
``S × S`` image sits at ``(b, a) = ((2i + 1) / S - 1, (2j + 1) / S - 1)`` times the physical ``half_width`` from the
frame centre. Only the 2D mask is known when generating, so the frame is derived from it (:func:`mask_frame_2d`):
the centre is the mask's centroid and ``half_width = margin * r``, with ``r`` the largest distance from the centroid
to a pixel's far corner (as :func:`~cellcascade.reconstruction.cameras.mask_frame` in 3D). Training uses the same
rule on the z-projection of each 3D cell, with a `margin` large enough for the cell's z extent, stored in the
pipeline's config. The returned ``half_width`` lets reconstruction voxelise back at the right physical size.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from cellcascade.errors import CellcascadeError
from cellcascade.models.multiview import MultiviewUNet
from cellcascade.reconstruction.cameras import DEFAULT_MARGIN, Views

SAMPLERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
UNET_ENTRY = ["cellcascade.models.multiview", "MultiviewUNet"]


@dataclass
class TopView:
    """A 2D mask seen in its frame.

    Attributes
    ----------
    image : ndarray bool, shape (S, S)
        The top-view silhouette (rows = y, columns = x).
    centre : ndarray float64, shape (2,)
        Frame centre in the mask's index coordinates (y, x).
    half_width : float
        Physical half-width of the frame.
    """

    image: np.ndarray
    centre: np.ndarray
    half_width: float


@dataclass
class MultiviewOutput:
    """Generated side-view silhouettes of N cells.

    Attributes
    ----------
    silhouettes : ndarray float32, shape (N, K, S, S)
        Side views in [0, 1] (cell where > 0.5), one per view of `views`.
    top : ndarray float32, shape (N, S, S)
        The conditions: each input mask in its frame (0/1).
    views : Views
        The K side views.
    half_width : ndarray float64, shape (N,)
        Physical half-width of each cell's frame.
    centre : ndarray float64, shape (N, 2)
        Each frame's centre in its input mask's index coordinates (y, x).
    """

    silhouettes: np.ndarray
    top: np.ndarray
    views: Views
    half_width: np.ndarray
    centre: np.ndarray

    def all_views(self) -> Views:
        """The top view (elevation 90°) followed by the K side views: the views of :meth:`all_silhouettes`."""
        return Views((90.0,) + self.views.elevation, (0.0,) + self.views.azimuth)

    def all_silhouettes(self) -> np.ndarray:
        """float32 (N, K + 1, S, S): the top view then the side views, ready for reconstruction."""
        return np.concatenate([self.top[:, None], self.silhouettes], axis=1).astype(np.float32)


def check_mask_2d(mask, name: str = "mask") -> np.ndarray:
    """A non-empty 2D mask (bool or integer, nonzero = cell) as bool (Y, X); CellcascadeError otherwise."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise CellcascadeError(f"{name} must be a 2D (Y, X) mask, got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer):
            raise CellcascadeError(f"{name} must be bool or integer (0 = outside), got dtype {mask.dtype}")
        mask = mask != 0
    if not mask.any():
        raise CellcascadeError(f"{name} is empty")
    return mask


def _check_pixel_size(pixel_size) -> np.ndarray:
    size = np.asarray(pixel_size, dtype=np.float64)
    if size.shape != (2,) or not np.all(np.isfinite(size)) or not np.all(size > 0):
        raise CellcascadeError(f"pixel_size must be two positive numbers (dy, dx), got {np.ravel(size).tolist()}")
    return size


def mask_frame_2d(mask_2d, pixel_size=(1.0, 1.0)) -> tuple[np.ndarray, float]:
    """Centroid and radius of a 2D mask: the frame rule of the module notes, without the margin.

    Parameters
    ----------
    mask_2d : ndarray bool, shape (Y, X)
    pixel_size : (dy, dx)

    Returns
    -------
    centre : ndarray float64, shape (2,)
        Centroid in index coordinates (y, x).
    radius : float
        Largest physical distance from the centroid to a pixel's far corner.

    Examples
    --------
    >>> mask_frame_2d(np.ones((2, 4), bool))
    (array([0.5, 1.5]), 2.23606797749979)
    """
    mask = check_mask_2d(mask_2d)
    spacing = _check_pixel_size(pixel_size)
    index = np.argwhere(mask).astype(np.float64)
    centre = index.mean(axis=0)
    radius = np.sqrt((((np.abs(index - centre) + 0.5) * spacing) ** 2).sum(axis=1)).max()
    return centre, float(radius)


def top_view(mask_2d, size: int, pixel_size=(1.0, 1.0), margin: float = DEFAULT_MARGIN, rotation: float = 0.0,
             half_width: float | None = None) -> TopView:
    """A 2D mask of any size in its top-view frame: centred, padded and resampled to ``size × size``.

    Each output pixel samples the bilinearly interpolated mask at its centre (> 0.5 = cell), as
    :func:`~cellcascade.reconstruction.cameras.render_silhouettes` samples a volume: the top view rendered from a
    prism (the mask extruded along z) is this image.

    Parameters
    ----------
    mask_2d : ndarray bool or int, shape (Y, X)
        One cell (nonzero = cell).
    size : int
        S, the output side.
    pixel_size : (dy, dx)
        Physical pixel size of `mask_2d`.
    margin : float
        Frame half-width over the mask's radius (see :func:`mask_frame_2d`).
    rotation : float
        Degrees: show the cell rotated about z by this angle (from +x towards +y), about the frame centre.
    half_width : float, optional
        Physical half-width; default ``margin * radius``.

    Returns
    -------
    TopView

    Examples
    --------
    >>> disc = np.hypot(*np.mgrid[-10:11, -10:11]) <= 8
    >>> view = top_view(disc, 32)
    >>> view.image.shape, view.centre.tolist(), round(view.half_width, 2)
    ((32, 32), [10.0, 10.0], 9.79)
    """
    mask = check_mask_2d(mask_2d, "mask_2d")
    spacing = _check_pixel_size(pixel_size)
    size = int(size)
    if size < 2:
        raise CellcascadeError(f"top view size must be at least 2 pixels, got {size}")
    if not (isinstance(margin, numbers.Real) and np.isfinite(margin) and margin >= 1):
        raise CellcascadeError(f"margin must be a number >= 1, got {margin!r}")
    if not (isinstance(rotation, numbers.Real) and np.isfinite(rotation)):
        raise CellcascadeError(f"rotation must be a finite number of degrees, got {rotation!r}")
    centre, radius = mask_frame_2d(mask, spacing)
    half_width = float(margin * radius if half_width is None else half_width)
    if not half_width > 0:
        raise CellcascadeError(f"half_width must be positive, got {half_width}")
    coords = (2 * np.arange(size) + 1) / size - 1
    b, a = np.meshgrid(coords, coords, indexing="ij")  # b: rows (y), a: columns (x)
    angle = np.deg2rad(rotation)
    x = a * np.cos(angle) + b * np.sin(angle)  # the rotated cell at (a, b) is the original at R(-angle) (a, b)
    y = -a * np.sin(angle) + b * np.cos(angle)
    rows = centre[0] + half_width * y / spacing[0] + 1  # + 1: the zero border added below
    cols = centre[1] + half_width * x / spacing[1] + 1
    values = ndi.map_coordinates(np.pad(mask.astype(np.float32), 1), [rows, cols], order=1, mode="nearest")
    return TopView(image=values > 0.5, centre=centre, half_width=half_width)


class MultiviewPipeline(DiffusionPipeline):
    """2D single-cell masks -> K side-view silhouettes of each cell, generated jointly.

    Parameters
    ----------
    unet : MultiviewUNet
        Its config holds the K side views and the silhouette size S.
    scheduler : DDIMScheduler or DPMSolverMultistepScheduler
        Swappable (:meth:`use_sampler`).
    margin : float
        The frame rule (module notes): frame half-width over the 2D mask's radius, as in training.

    Examples
    --------
    >>> pipe = load_multiview_pipeline("weights/multiview")  # doctest: +SKIP
    >>> out = pipe([mask], num_inference_steps=20, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> out.silhouettes.shape  # doctest: +SKIP
    (1, 8, 32, 32)
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: MultiviewUNet, scheduler, margin: float = DEFAULT_MARGIN):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(margin=float(margin))

    @property
    def views(self) -> Views:
        """The K side views the model generates."""
        return self.unet.views

    def use_sampler(self, name: str) -> None:
        """Switch the sampler to "ddim" or "dpm" (DPM-Solver++), keeping the noise schedule."""
        if name not in SAMPLERS:
            raise CellcascadeError(f"sampler must be one of {sorted(SAMPLERS)}, not {name!r}")
        self.scheduler = SAMPLERS[name].from_config(self.scheduler.config)

    def frames(self, masks_2d, pixel_size=(1.0, 1.0)) -> list[TopView]:
        """Each mask in its top-view frame at the model's size (see :func:`top_view`)."""
        if isinstance(masks_2d, np.ndarray) and masks_2d.ndim == 2:
            raise CellcascadeError("masks_2d must be (N, Y, X) or a list of 2D masks; wrap a single mask in a list")
        if isinstance(masks_2d, np.ndarray) and masks_2d.ndim != 3:
            raise CellcascadeError(f"masks_2d must be (N, Y, X) or a list of 2D masks, got shape {masks_2d.shape}")
        masks = list(masks_2d)
        if not masks:
            raise CellcascadeError("no masks given")
        size = self.unet.config.sample_size
        return [top_view(check_mask_2d(m, f"mask {i}"), size, pixel_size, self.config.margin)
                for i, m in enumerate(masks)]

    @torch.no_grad()
    def denoise(self, top: torch.Tensor, num_inference_steps: int, generator: torch.Generator | None) -> np.ndarray:
        """Run the sampler once for a batch of conditions.

        Parameters
        ----------
        top : Tensor float32 (B, 1, S, S)
            Top views in [-1, 1].

        Returns
        -------
        ndarray float32 (B, K, S, S): raw outputs in [-1, 1].
        """
        batch, size = top.shape[0], self.unet.config.sample_size
        x = torch.randn((batch, self.unet.num_views, size, size), generator=generator).to(self.device)
        top = top.to(self.device)
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.scheduler.timesteps:
            prediction = self.unet(torch.cat([x, top], dim=1), t).sample  # noise or clean views (prediction type)
            x = self.scheduler.step(prediction, t, x).prev_sample
        return x.clamp(-1, 1).float().cpu().numpy()

    @torch.no_grad()
    def __call__(
        self,
        masks_2d,
        num_inference_steps: int = 20,
        generator: torch.Generator | None = None,
        pixel_size=(1.0, 1.0),
        batch_size: int = 32,
        progress: bool = False,
    ) -> MultiviewOutput:
        """Generate the K side views of every cell.

        Parameters
        ----------
        masks_2d : ndarray bool (N, Y, X) or list of 2D masks of any sizes
            One cell each (nonzero = cell), as a 2D annotation shows it (the view down z).
        num_inference_steps : int
        generator : torch.Generator, optional
            Same seed, same silhouettes (noise is drawn on the CPU, batch after batch).
        pixel_size : (dy, dx)
            Physical pixel size of the masks (sets each frame's physical half-width).
        batch_size : int
            Cells denoised together.
        progress : bool

        Returns
        -------
        MultiviewOutput
        """
        if not isinstance(num_inference_steps, numbers.Integral) or num_inference_steps < 1:
            raise CellcascadeError(f"number of sampling steps must be a positive integer, not {num_inference_steps!r}")
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise CellcascadeError(f"batch size must be a positive integer, not {batch_size!r}")
        frames = self.frames(masks_2d, pixel_size)
        top = np.stack([f.image for f in frames]).astype(np.float32)
        conditions = torch.from_numpy(top[:, None] * 2 - 1)
        raw = []
        for begin in tqdm(range(0, len(frames), batch_size), desc="multiview", disable=not progress):
            raw.append(self.denoise(conditions[begin : begin + batch_size], int(num_inference_steps), generator))
        silhouettes = (np.concatenate(raw) + 1) / 2
        return MultiviewOutput(
            silhouettes=np.clip(silhouettes, 0, 1).astype(np.float32),
            top=top,
            views=self.views,
            half_width=np.array([f.half_width for f in frames], dtype=np.float64),
            centre=np.stack([f.centre for f in frames]),
        )


def load_multiview_pipeline(path, device: str = "cpu") -> MultiviewPipeline:
    """Load a saved multiview model folder (safetensors only, checked first); raise CellcascadeError if unusable."""
    from diffusers.utils import logging as diffusers_logging

    from cellcascade.io.model_folder import check_pipeline_folder

    folder = check_pipeline_folder(path, "MultiviewPipeline")
    index = json.loads((folder / "model_index.json").read_text())
    # The index names the classes to build: accept only ours and diffusers' samplers.
    samplers = [["diffusers", c.__name__] for c in SAMPLERS.values()]
    if index.get("unet") != UNET_ENTRY or index.get("scheduler") not in samplers:
        found = f"unet {index.get('unet')}, scheduler {index.get('scheduler')}"
        raise CellcascadeError(f"{folder}: model_index.json names unexpected components ({found})")
    diffusers_logging.disable_progress_bar()
    try:
        pipe = MultiviewPipeline.from_pretrained(Path(folder), use_safetensors=True)
    except CellcascadeError as exc:
        raise CellcascadeError(f"{folder}: cannot load the multiview model ({exc})") from None
    except Exception as exc:  # diffusers raises several types for damaged folders
        raise CellcascadeError(f"{folder}: cannot load the multiview model ({exc})".splitlines()[0]) from None
    finally:
        diffusers_logging.enable_progress_bar()
    return pipe.to(device)
