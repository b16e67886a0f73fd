"""Segmenters that the benchmark trains and scores: a small protocol and Cellpose 3 trained from scratch.

A segmenter learns from a list of images with instance labels and writes checkpoints along training, so the
benchmark can draw a learning curve and choose the number of steps on validation data. Every segmenter takes
images that are already normalised (the benchmark normalises each source image once, with
:func:`normalize_percentile`), so that a crop is scaled like the image it was cut from.

Cellpose 3 (``cellpose<4``) is the one implementation; StarDist or another network fits the same protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from skimage.segmentation import relabel_sequential

from cellcascade.errors import CellcascadeError


@dataclass(frozen=True)
class Checkpoint:
    """Weights saved after `step` optimizer steps (one step = one batch)."""

    step: int
    path: Path


class Segmenter(Protocol):
    """What the benchmark needs from a segmentation network.

    ``train`` must do exactly ``steps`` optimizer steps whatever the number of images (so arms with more images
    do not get more training), draw image ``i`` with probability ``probabilities[i]``, and be deterministic for a
    given ``seed``; with ``final_steps`` > 0, draw with ``final_probabilities`` over the last ``final_steps`` steps
    instead (the benchmark passes these only when it fine-tunes). ``predict`` returns label images with consecutive
    ids. A segmenter may also offer ``predict_each(checkpoint, images, *, diameter, mask_options)``: the
    predictions with each of several `mask_options` at once (one list per option), which the benchmark's threshold
    search then uses; the benchmark's checkpoint ensembles (``run_benchmark(ensemble=K)``) pass it a list of
    checkpoints, whose outputs it averages.
    """

    name: str

    def train(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        *,
        steps: int,
        seed: int,
        work_dir: str | Path,
        checkpoints: Sequence[int],
        probabilities: Sequence[float] | None = None,
        final_steps: int = 0,
        final_probabilities: Sequence[float] | None = None,
    ) -> list[Checkpoint]: ...

    def predict(self, checkpoint: Checkpoint, images: Sequence[np.ndarray], *, diameter: float,
                **mask_options: float) -> list[np.ndarray]:
        """`mask_options` (e.g. Cellpose's ``cellprob_threshold``) come only from ``run_benchmark(tune_masks=True)``."""
        ...


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The intensities at the `low` and `high` percentiles of `image` (Cellpose's normalisation, 1 and 99).

    Parameters
    ----------
    image : ndarray, shape (Y, X), any real dtype

    Returns
    -------
    (lo, hi) : floats with hi > lo; apply as ``(image - lo) / (hi - lo)``.

    Examples
    --------
    >>> lo, hi = normalize_percentile(np.arange(101.0))
    >>> lo, hi
    (1.0, 99.0)
    """
    lo, hi = np.percentile(np.asarray(image, dtype=np.float64), [low, high])
    if not hi > lo:
        hi = lo + 1.0  # a flat image: keep it flat instead of dividing by zero
    return float(lo), float(hi)


def apply_normalization(image: np.ndarray, lo_hi: tuple[float, float]) -> np.ndarray:
    """float32 (Y, X): ``(image - lo) / (hi - lo)``."""
    lo, hi = lo_hi
    return ((np.asarray(image, dtype=np.float32) - lo) / (hi - lo)).astype(np.float32)


def relabel(labels: np.ndarray) -> np.ndarray:
    """int32 label image with consecutive ids 1..N in the order of the original ids (0 stays 0)."""
    return relabel_sequential(np.asarray(labels).astype(np.int64))[0].astype(np.int32)


def label_diameter(labels: np.ndarray) -> float:
    """Cellpose's cell "diameter" of a label image: that of a disc with the median object area (at least 5 px)."""
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    if not len(areas):
        raise CellcascadeError("cannot measure the cell diameter of an empty label image")
    return max(5.0, float(np.sqrt(np.median(areas) / np.pi) * 2))


def _draw_probabilities(values: Sequence[float], n: int, name: str) -> np.ndarray:
    """`values` as float64 probabilities that sum to 1, checked: one non-negative number per image, not all zero."""
    probabilities = np.asarray(values, dtype=np.float64)
    if probabilities.shape != (n,) or probabilities.min() < 0 or not probabilities.sum() > 0:
        raise CellcascadeError(f"{name} must be one non-negative number per image, not all zero")
    return probabilities / probabilities.sum()


@dataclass
class CellposeSegmenter:
    """Cellpose 3 trained from random weights (no download), on the CPU or a given device.

    The loop follows ``cellpose.train.train_seg`` (same network, loss, AdamW, learning rate with a linear
    warm-up, augmentation by ``transforms.random_rotate_and_resize`` with Cellpose's per-image rescaling) with
    three changes that a fair benchmark needs: one batch per step whatever the number of images (images drawn
    at random with the given probabilities); the augmentation and the draw of images follow `seed` (Cellpose
    reseeds NumPy with the epoch number, so all seeds would see the same batches); and by default no learning-rate
    decay at the end, so the checkpoint after ``s`` steps of a long run is the same model as a run of ``s`` steps,
    and a real-only run of 4×S steps contains the real-only run of S steps. `decay_steps` > 0 restores Cellpose's
    final decay (ten halvings spread over the last `decay_steps` steps, :meth:`learning_rate_at`); checkpoints
    before the decay are still those of a shorter constant-rate run, the ones inside it are not.

    Optional weight averaging (`ema` > 0): checkpoints then hold an exponential moving average of the weights
    (``torch.optim.swa_utils.AveragedModel``; a running mean over the first ``1 / (1 - ema)`` steps, then an EMA
    with that decay). It smooths the last steps' noise the way a final learning-rate decay would, and keeps the
    property above: the average after ``s`` steps does not depend on how many steps follow.

    Diameter: during training each image is resized so that its cells (median area, :func:`label_diameter`)
    measure `diam_mean` pixels, as Cellpose does; :meth:`predict` resizes the images by
    ``diam_mean / diameter`` with the `diameter` the caller measured on its training annotations.

    Parameters
    ----------
    diam_mean : float
        Cell diameter, in network pixels (17 is Cellpose's nuclei model).
    tile : int
        Side of the square training tiles (a multiple of 16).
    batch_size : int
        Tiles per optimizer step.
    learning_rate, weight_decay : float
        AdamW settings (Cellpose's defaults).
    warmup : int
        Steps of linear learning-rate warm-up.
    decay_steps : int
        Length of the final learning-rate decay, in steps (0: none, the default).
    ema : float
        Decay of the moving average of the weights that checkpoints save, in [0, 1); 0 = the raw weights.
    test_augment : bool
        Test-time augmentation in :meth:`predict` (Cellpose's ``augment``: overlapping tiles, flipped, averaged).
    device : str
        Torch device ("cpu", "cuda").

    Examples
    --------
    >>> seg = CellposeSegmenter(tile=64, batch_size=2)
    >>> ckpts = seg.train(images, labels, steps=4, seed=0, work_dir="run", checkpoints=[2, 4])  # doctest: +SKIP
    >>> masks = seg.predict(ckpts[-1], test_images, diameter=24.0)  # doctest: +SKIP
    """

    diam_mean: float = 17.0
    tile: int = 128
    batch_size: int = 8
    learning_rate: float = 0.005
    weight_decay: float = 1e-5
    warmup: int = 10
    decay_steps: int = 0
    ema: float = 0.0
    test_augment: bool = False
    device: str = "cpu"
    name: str = "cellpose3"

    def __post_init__(self) -> None:
        if self.tile < 16 or self.tile % 16:
            raise CellcascadeError(f"the training tile must be a multiple of 16 pixels, not {self.tile}")
        if self.batch_size < 1:
            raise CellcascadeError(f"batch size must be at least 1, not {self.batch_size}")
        if not self.diam_mean > 0:
            raise CellcascadeError(f"diam_mean must be positive, not {self.diam_mean}")
        if not 0 <= self.ema < 1:
            raise CellcascadeError(f"the weight-average decay ema must be in [0, 1), not {self.ema}")
        if self.decay_steps < 0:
            raise CellcascadeError(f"decay_steps must be at least 0, not {self.decay_steps}")

    def learning_rate_at(self, step: int, steps: int) -> float:
        """The learning rate of optimizer step `step` (1-based) of a run of `steps` steps.

        Cellpose's schedule (``cellpose.train.train_seg``) counted in steps instead of epochs: a linear warm-up over
        `warmup` steps, the constant `learning_rate`, and with `decay_steps` > 0 ten halvings spread evenly over the
        last `decay_steps` steps (the rate ends at 1/1024 of its value, as Cellpose's last 100 epochs do).

        >>> seg = CellposeSegmenter(learning_rate=1.0, warmup=10, decay_steps=20)
        >>> [seg.learning_rate_at(s, 100) for s in (5, 80, 81, 83, 100)]
        [0.5, 1.0, 0.5, 0.25, 0.0009765625]
        """
        rate = self.learning_rate * min(1.0, step / self.warmup)
        start = steps - self.decay_steps
        if self.decay_steps and step > start:
            rate *= 0.5 ** (1 + (step - start - 1) * 10 // self.decay_steps)
        return rate

    @property
    def config(self) -> dict:
        return asdict(self)

    def _new_model(self):
        from cellpose import models

        # mkldnn off: the same code path for training and prediction (MKL-DNN cannot train).
        return models.CellposeModel(
            gpu=False,
            pretrained_model=False,
            model_type=None,
            nchan=2,
            diam_mean=self.diam_mean,
            mkldnn=False,
            device=_torch_device(self.device),
        )

    def train(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        *,
        steps: int,
        seed: int,
        work_dir: str | Path,
        checkpoints: Sequence[int],
        probabilities: Sequence[float] | None = None,
        final_steps: int = 0,
        final_probabilities: Sequence[float] | None = None,
    ) -> list[Checkpoint]:
        """Train from random weights for exactly `steps` optimizer steps.

        Parameters
        ----------
        images : sequence of ndarray float32, shape (Y, X)
            Normalised images (see :func:`normalize_percentile`), any sizes.
        labels : sequence of ndarray int, shape (Y, X)
            Instance labels, 0 = background, each with at least one object.
        steps : int
            Optimizer steps (batches of `batch_size` tiles).
        seed : int
            Seeds the initial weights, the draw of images and the augmentation.
        work_dir : path
            Folder for the checkpoints (created).
        checkpoints : sequence of int
            Steps after which to save the weights, each in 1..steps (`steps` is always saved).
        probabilities : sequence of float, optional
            Chance to draw each image for a tile (default: uniform).
        final_steps : int
            Over the last `final_steps` steps, draw with `final_probabilities` instead (e.g. the real images only:
            fine-tuning after training on real + synthetic images). The steps before, and their checkpoints, are
            those of a run without it (default 0: none).
        final_probabilities : sequence of float, optional
            Chance to draw each image over the last `final_steps` steps; needed when `final_steps` > 0.

        Returns
        -------
        list of Checkpoint, by step.
        """
        import torch
        from cellpose import dynamics, transforms
        from cellpose.train import _loss_fn_seg  # the loss of cellpose.train.train_seg

        if len(images) != len(labels) or not len(images):
            raise CellcascadeError(f"need as many label images as images (at least one), got {len(images)} and {len(labels)}")
        if steps < 1:
            raise CellcascadeError(f"steps must be at least 1, not {steps}")
        if self.decay_steps > steps:
            raise CellcascadeError(f"the final decay ({self.decay_steps} steps) is longer than the run ({steps} steps)")
        wanted = sorted({int(s) for s in checkpoints} | {int(steps)})
        if wanted[0] < 1 or wanted[-1] > steps:
            raise CellcascadeError(f"checkpoints must lie in 1..{steps}, got {sorted(checkpoints)}")
        n = len(images)
        probabilities = _draw_probabilities(np.full(n, 1.0 / n) if probabilities is None else probabilities, n,
                                            "probabilities")
        if not 0 <= final_steps <= steps:
            raise CellcascadeError(f"final_steps must be in 0..steps ({steps}), not {final_steps}")
        if final_steps and final_probabilities is None:
            raise CellcascadeError("final_steps > 0 needs final_probabilities")
        final = _draw_probabilities(final_probabilities, n, "final_probabilities") if final_steps else probabilities

        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        device = _torch_device(self.device)
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        model = self._new_model()
        net = model.net

        stacks, flows, diameters = [], [], []
        for image, label in zip(images, labels):
            image = np.asarray(image, dtype=np.float32)
            label = relabel(label)
            if image.shape != label.shape or image.ndim != 2:
                raise CellcascadeError(f"each image and its labels must be 2D of the same shape, got {image.shape} and {label.shape}")
            if not label.any():
                raise CellcascadeError("a training label image holds no object")
            stacks.append(np.stack([image, np.zeros_like(image)]))  # channel 2 empty, as channels=[0, 0]
            # one image at a time (no progress bar); labels_to_flows renumbers in place, so give it a copy
            flows.append(dynamics.labels_to_flows([label.copy()], device=torch.device("cpu"))[0][1:])
            diameters.append(label_diameter(label))
        diameters = np.asarray(diameters)
        net.diam_labels.data = torch.tensor([float(np.mean(diameters))], device=device)

        optimizer = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        averaged = _weight_average(net, self.ema) if self.ema > 0 else None
        saved: list[Checkpoint] = []
        numpy_state = np.random.get_state()  # random_rotate_and_resize draws from NumPy's global generator
        try:
            for step in range(1, steps + 1):
                picks = rng.choice(n, size=self.batch_size, p=final if step > steps - final_steps else probabilities)
                np.random.seed(int(rng.integers(2**31)))
                tiles, targets = transforms.random_rotate_and_resize(
                    [stacks[i] for i in picks],
                    Y=[flows[i] for i in picks],
                    rescale=diameters[picks] / self.diam_mean,
                    scale_range=0.5,
                    xy=(self.tile, self.tile),
                )[:2]
                for group in optimizer.param_groups:
                    group["lr"] = self.learning_rate_at(step, steps)
                net.train()
                output = net(torch.from_numpy(tiles).to(device))[0]
                loss = _loss_fn_seg(targets, output, device)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if averaged is not None:
                    averaged.update_parameters(net)
                if step in wanted:
                    path = work_dir / f"step_{step:06d}.safetensors"
                    _save_weights(net if averaged is None else averaged.module, path)
                    saved.append(Checkpoint(step=step, path=path))
        finally:
            np.random.set_state(numpy_state)
        return saved

    def predict(self, checkpoint: Checkpoint, images: Sequence[np.ndarray], *, diameter: float,
                cellprob_threshold: float = 0.0, flow_threshold: float = 0.4) -> list[np.ndarray]:
        """Segment normalised images with the weights of `checkpoint`.

        Parameters
        ----------
        checkpoint : Checkpoint
            From :meth:`train`.
        images : sequence of ndarray float32, shape (Y, X)
            Normalised like the training images.
        diameter : float
            Cell diameter in these images, in pixels (measured on the training annotations).
        cellprob_threshold, flow_threshold : float
            Cellpose's mask thresholds (its defaults 0 and 0.4): pixels whose cell-probability logit exceeds the
            first are foreground; masks whose flow error exceeds the second are dropped (0: none are).

        Returns
        -------
        list of ndarray int32, shape (Y, X): instance labels with consecutive ids, 0 = background.
        """
        options = [dict(cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold)]
        return self.predict_each(checkpoint, images, diameter=diameter, mask_options=options)[0]

    def predict_each(self, checkpoint: Checkpoint | Sequence[Checkpoint], images: Sequence[np.ndarray], *,
                     diameter: float, mask_options: Sequence[dict]) -> list[list[np.ndarray]]:
        """:meth:`predict` with each of several mask thresholds, running the network once per image.

        The network's flows and cell probabilities do not depend on the thresholds, so the benchmark's threshold
        search costs one network pass and one mask reconstruction per pair (``cellpose.dynamics``, with the
        settings of ``CellposeModel.eval``: the same masks as ``eval`` with those thresholds).

        Parameters
        ----------
        checkpoint : Checkpoint or sequence of Checkpoint
            Several: an ensemble. Each network's flows and cell-probability logits are averaged before the masks
            are drawn, as Cellpose 1–2 averaged its four networks (``net_avg``); cellpose 3 has no such option
            for a model's own checkpoints, hence this loop.
        mask_options : sequence of dict
            Keyword arguments of :meth:`predict` (``cellprob_threshold``, ``flow_threshold``); ``{}``: defaults.
            An option may also hold ``border_padding`` (pixels, default 0): the image is mirrored that far beyond
            its border before the network sees it, and the masks are cut back to the image, without the mirror
            images of cells inside (:func:`unpad_masks`). Cellpose pads with zeros, so a nucleus cut by the image
            border meets a black edge that training tiles seldom show; mirrored, it looks like a whole (narrower) cell.
            One network pass per distinct padding.

        Returns
        -------
        list (one per option) of lists (one per image) of ndarray int32, shape (Y, X).
        """
        from cellpose import dynamics

        if not diameter > 0:
            raise CellcascadeError(f"diameter must be positive, not {diameter}")
        smallest_side = min((min(np.shape(i)) for i in images), default=None)
        thresholds = []
        for option in mask_options:
            unknown = set(option) - {"cellprob_threshold", "flow_threshold", "border_padding"}
            if unknown:
                raise CellcascadeError(f"unknown mask option(s) {sorted(unknown)}")
            pair = (float(option.get("cellprob_threshold", 0.0)), float(option.get("flow_threshold", 0.4)))
            if not pair[1] >= 0:
                raise CellcascadeError(f"flow_threshold must be at least 0, not {pair[1]}")
            padding = option.get("border_padding", 0)
            if padding != int(padding) or padding < 0:
                raise CellcascadeError(f"border_padding must be a whole number of pixels >= 0, not {padding}")
            if smallest_side is not None and padding >= smallest_side:
                raise CellcascadeError(f"border_padding ({padding} px) must be smaller than every image side")
            thresholds.append((*pair, int(padding)))
        members = [checkpoint] if isinstance(checkpoint, Checkpoint) else list(checkpoint)
        if not members:
            raise CellcascadeError("predict_each needs at least one checkpoint")
        models = []
        for member in members:
            model = self._new_model()
            _load_weights(model.net, member.path)
            model.diam_labels = float(model.net.diam_labels.item())
            models.append(model)
        niter = float(diameter) / self.diam_mean * 200  # eval's default with resample: 200 steps at network scale
        out: list[list[np.ndarray]] = [[] for _ in thresholds]
        options_by_padding: dict[int, list[int]] = {}  # one network pass per padding serves all its options
        for index, (_, _, padding) in enumerate(thresholds):
            options_by_padding.setdefault(padding, []).append(index)
        for image in images:
            image = np.asarray(image, dtype=np.float32)
            for padding, indices in sorted(options_by_padding.items()):
                padded = np.pad(image, padding, mode="reflect") if padding else image
                outputs = [
                    model.eval(
                        padded,
                        channels=None,
                        normalize={"normalize": False},  # a dict: cellpose would otherwise mutate its module default
                        diameter=float(diameter),
                        augment=self.test_augment,
                        compute_masks=False,
                    )[1]
                    for model in models
                ]
                flow = np.mean([o[1] for o in outputs], axis=0)  # one member: its own outputs, exactly
                cellprob = np.mean([o[2] for o in outputs], axis=0)
                for index in indices:
                    cellprob_threshold, flow_threshold, _ = thresholds[index]
                    masks = dynamics.resize_and_compute_masks(
                        flow, cellprob, niter=niter, cellprob_threshold=cellprob_threshold,
                        flow_threshold=flow_threshold, interp=True, min_size=15, max_size_fraction=0.4,
                        device=models[0].device,
                    )
                    out[index].append(unpad_masks(masks, padding))
        return out


def unpad_masks(masks: np.ndarray, padding: int) -> np.ndarray:
    """Masks of an image padded by `padding` pixels on every side, cut back to the image.

    The margin holds mirror images. A cell cut by the image border is found whole, with its mirror image, and keeps
    its inner part: at least as large as each mirrored copy (one beyond an edge, three beyond a corner). An object
    whose inner part is less than half its largest piece in one of the eight margin regions (the sides and the
    corners) is the mirror image of a cell inside, and is dropped.

    Parameters
    ----------
    masks : ndarray int, shape (Y + 2 padding, X + 2 padding)
    padding : int

    Returns
    -------
    ndarray int32, shape (Y, X): instance labels with consecutive ids.

    >>> m = np.zeros((8, 8), int)
    >>> m[1:4, 1:4] = 1  # a corner cell: 2 × 2 px inside, 1 × 2, 2 × 1 and 1 × 1 px mirrored
    >>> m[3:5, 4:6] = 2  # a whole cell
    >>> m[6:8, 2:4] = 3; m[5, 3] = 3  # the mirror image of a cell near the bottom: 1 px inside, 4 in the margin
    >>> unpad_masks(m, 2)
    array([[1, 1, 0, 0],
           [1, 1, 2, 2],
           [0, 0, 2, 2],
           [0, 0, 0, 0]], dtype=int32)
    """
    if not padding:
        return relabel(masks)
    masks = np.asarray(masks)
    n = int(masks.max()) + 1
    bands = [np.digitize(np.arange(size), [padding, size - padding]) for size in masks.shape]  # 0, 1, 2
    region = 3 * bands[0][:, None] + bands[1][None, :]  # 4 = the image, others = the 8 margin regions
    counts = np.bincount((masks * 9 + region).ravel(), minlength=9 * n).reshape(n, 9)
    inside = counts[:, 4]
    largest_margin_piece = np.delete(counts, 4, axis=1).max(axis=1)
    drop = np.flatnonzero(2 * inside < largest_margin_piece)
    inner = masks[padding:-padding, padding:-padding]
    return relabel(np.where(np.isin(inner, drop[drop > 0]), 0, inner))


def _weight_average(net, decay: float):
    """An ``AveragedModel`` of `net` (parameters and buffers): running mean, then an EMA with `decay`.

    The averaging rule is ours (torch's EMA helper has no warm-up, so the random initial weights would weigh
    ``decay ** s`` after s steps); integer buffers (BatchNorm's step counter) follow the live network.
    """
    from torch.optim.swa_utils import AveragedModel

    def average(mean, current, n_averaged):
        if not mean.is_floating_point():
            return current
        return mean + (current - mean) * max(1.0 - decay, 1.0 / (float(n_averaged) + 1.0))

    return AveragedModel(net, avg_fn=average, use_buffers=True)


def _torch_device(name: str):
    import torch

    return torch.device(name)


def _save_weights(net, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path))


def _load_weights(net, path: Path) -> None:
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(path), device=str(net.device)))
