"""Preview PNGs: label images coloured with outlines, galleries of single-cell masks, orthogonal views of volumes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.color import label2rgb  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from cellcascade.errors import CellcascadeError  # noqa: E402


def colour_labels(labels: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """RGB float (Y, X, 3): each cell a colour, outlines white; over `image` (Y, X) if given."""
    if image is not None:
        low, high = np.percentile(image, (1, 99.8))
        gray = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)
        rgb = label2rgb(labels, image=gray, alpha=0.25, bg_label=0, image_alpha=1.0)
    else:
        rgb = label2rgb(labels, bg_label=0)
    rgb[find_boundaries(labels, mode="inner")] = 1.0
    return np.clip(rgb, 0, 1)


def save_label_preview(path: str | Path, label_images: list[np.ndarray], titles: list[str] | None = None,
                       images: list[np.ndarray] | None = None, columns: int = 4) -> None:
    """A grid of coloured label images (with the intensity image beside each one, if given) as a PNG."""
    panels = []
    for i, labels in enumerate(label_images):
        title = titles[i] if titles else f"#{i}"
        if images is not None:
            panels.append((images[i], f"{title} image", True))
            panels.append((colour_labels(labels, images[i]), f"{title} labels", False))
        else:
            panels.append((colour_labels(labels), title, False))
    columns = min(columns * (2 if images is not None else 1), len(panels))
    rows = int(np.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (panel, title, gray) in zip(axes.ravel(), panels):
        ax.imshow(panel, cmap="gray" if gray else None, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_mask_gallery(path: str | Path, masks: np.ndarray, title: str = "", columns: int = 8) -> None:
    """Single-cell masks (N, S, S) bool as a grid PNG."""
    n = len(masks)
    columns = min(columns, n)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, mask in zip(axes.ravel(), masks):
        ax.imshow(mask, cmap="gray", interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)



def orthogonal_slices(volume: np.ndarray, position: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
    """The XY, XZ and YZ planes through `position` (default the centre voxel) of a (Z, Y, X) array.

    Returns ``{"XY": volume[z] (Y, X), "XZ": volume[:, y] (Z, X), "YZ": volume[:, :, x] (Z, Y)}``.
    """
    z, y, x = (n // 2 for n in volume.shape) if position is None else position
    return {"XY": volume[z], "XZ": volume[:, y], "YZ": volume[:, :, x]}


def volume_preview_figure(labels: np.ndarray, image: np.ndarray | None = None,
                          spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                          position: tuple[int, int, int] | None = None, title: str = ""):
    """The figure that :func:`save_volume_preview` writes, for showing or testing; same arguments, less the path.

    Returns
    -------
    matplotlib.figure.Figure
        Per set (the image set first, if any) three axes, labelled (``Axes.get_label()``) "XY", "XZ" and "YZ".
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise CellcascadeError(f"a volume preview needs (Z, Y, X) labels, got shape {labels.shape}")
    if image is not None and np.shape(image) != labels.shape:
        raise CellcascadeError(f"image shape {np.shape(image)} and labels shape {labels.shape} differ")
    depth, rows, columns = labels.shape
    dz, dy, dx = (float(s) for s in spacing)
    sets = [(orthogonal_slices(labels, position), None)]
    if image is not None:
        image_slices = orthogonal_slices(np.asarray(image), position)
        sets = [(None, image_slices), (sets[0][0], image_slices)]
    width, height = columns * dx, rows * dy  # physical extent of the XY view
    thickness = depth * dz
    inches = 6.0 / (width + thickness)
    fig = plt.figure(figsize=(len(sets) * (width + thickness) * inches + 0.2, (height + thickness) * inches + 0.5))
    outer = fig.add_gridspec(1, len(sets), wspace=0.05)
    for k, (label_slices, image_slices) in enumerate(sets):
        grid = outer[k].subgridspec(2, 2, width_ratios=[width, thickness], height_ratios=[height, thickness],
                                    wspace=0.02, hspace=0.02)
        # (position in the grid, orientation, pixel aspect = height / width); YZ is drawn as (Y, Z), beside XY
        views = {"XY": (grid[0, 0], lambda a: a, dy / dx), "XZ": (grid[1, 0], lambda a: a, dz / dx),
                 "YZ": (grid[0, 1], lambda a: np.swapaxes(a, 0, 1), dy / dz)}
        for name, (cell, orient, aspect) in views.items():
            ax = fig.add_subplot(cell)
            if label_slices is None:
                ax.imshow(orient(image_slices[name]), cmap="gray", interpolation="nearest", aspect=aspect)
            else:
                background = None if image_slices is None else image_slices[name]
                ax.imshow(orient(colour_labels(label_slices[name], background)), interpolation="nearest",
                          aspect=aspect)
            ax.set_label(name)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.02, 0.98, name, transform=ax.transAxes, color="yellow", fontsize=7, va="top")
    heading = "image | labels" if image is not None else "labels"
    fig.suptitle(f"{title}  ({heading}; voxel {dz:g} x {dy:g} x {dx:g})".strip(), fontsize=8)
    return fig


def save_volume_preview(path: str | Path, labels: np.ndarray, image: np.ndarray | None = None,
                        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                        position: tuple[int, int, int] | None = None, title: str = "") -> None:
    """A PNG of a 3D label volume: XY, XZ and YZ slices with coloured cells and white outlines.

    Orthogonal views as in Fiji: XY top left, XZ below it (z down), YZ on its right (z to the right), all through
    `position` (z, y, x) (default the centre voxel). Pixels are drawn at their physical aspect, so z is stretched
    by ``dz / dx`` and cells look as in space. With `image`, the intensity views come first and the labels are
    drawn over them in a second set.

    Parameters
    ----------
    path : path
        The PNG to write.
    labels : ndarray int, shape (Z, Y, X)
        Instance labels, 0 = background.
    image : ndarray, shape (Z, Y, X), optional
        Intensities.
    spacing : (float, float, float)
        Voxel size (dz, dy, dx).
    position : (int, int, int), optional
        Voxel the three slices go through.
    title : str

    Examples
    --------
    >>> save_volume_preview("preview.png", labels, image, spacing=(2.0, 0.5, 0.5))  # doctest: +SKIP
    """
    fig = volume_preview_figure(labels, image, spacing, position, title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
