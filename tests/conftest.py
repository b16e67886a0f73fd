"""Shared fixtures: tiny data and a tiny mask model trained once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.draw import ellipse

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def ellipse_labels(shape=(96, 96), n=6, seed=0) -> np.ndarray:
    """int32 (Y, X) label image of `n` non-overlapping ellipses (ids 1..n), away from the border."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    placed = 0
    while placed < n:
        r, c = rng.integers(12, shape[0] - 12), rng.integers(12, shape[1] - 12)
        rr, cc = ellipse(r, c, rng.uniform(4, 8), rng.uniform(4, 8), shape=shape, rotation=rng.uniform(0, np.pi))
        if labels[rr, cc].any():
            continue
        placed += 1
        labels[rr, cc] = placed
    return labels


def write_pairs(folder: Path, n_images=2, shape=(96, 96)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        labels = ellipse_labels(shape, seed=i)
        image = (20 + 100 * (labels > 0)).astype(np.uint8)
        tifffile.imwrite(folder / f"img{i}.tif", image)
        tifffile.imwrite(folder / f"img{i}_masks.tif", labels.astype(np.uint16))
    return folder


@pytest.fixture
def pairs_folder(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs")


@pytest.fixture(scope="session")
def tiny_mask_model(tmp_path_factory) -> Path:
    """A mask model folder trained for a few steps on the embedded sample (tiny preset, 16 px)."""
    from cellcascade.data import load_sample
    from cellcascade.training.loop import TrainConfig
    from cellcascade.training.mask import train_mask_model

    out = tmp_path_factory.mktemp("models") / "tiny-masks"
    train_mask_model(load_sample(), out, crop_size=16, preset="tiny",
                     config=TrainConfig(steps=4, batch_size=8, checkpoint_every=2), device="cpu", progress=False)
    return out


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"sample data {name} not found at {path} (the ../shared/data folder beside the checkout)")
    return path
