"""Preview PNGs: label images coloured with outlines, and galleries of single-cell masks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.color import label2rgb  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402


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
