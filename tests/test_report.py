"""The evaluation report: files written, numbers sane, nothing half-written on error."""

import json
import math
import re

import numpy as np
import pytest
import tifffile

from cellcascade.data import AnnotatedImage
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation import report
from cellcascade.evaluation.realism import RealismScores
from cellcascade.evaluation.report import REPORT_FILES, as_2d_items, evaluate_folders, raw_window, tile_corners


def write_pairs(folder, seed, n_images=3, size=64, radius=(5, 8), brightness=200.0):
    """Image/mask pairs NAME.tif + NAME_masks.tif: a few textured discs on a noisy background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    for k in range(n_images):
        labels = np.zeros((size, size), np.uint16)
        for cell, (cy, cx) in enumerate([(16, 16), (16, 46), (46, 18), (44, 46)], start=1):
            r = rng.uniform(*radius)
            labels[(yy - cy - rng.integers(-3, 4)) ** 2 + (xx - cx - rng.integers(-3, 4)) ** 2 <= r**2] = cell
        image = 20 + rng.normal(0, 3, (size, size)) + (labels > 0) * brightness * rng.uniform(0.7, 1.3, (size, size))
        tifffile.imwrite(folder / f"img{k}.tif", image.astype(np.float32))
        tifffile.imwrite(folder / f"img{k}_masks.tif", labels)
    return folder


def fake_scores(real, synthetic, **options):
    return RealismScores(0.01 * len(real), 0.001, 5.0, len(real), len(synthetic), min(len(real), len(synthetic)))


@pytest.fixture
def folders(tmp_path):
    return write_pairs(tmp_path / "real", seed=0), write_pairs(tmp_path / "synthetic", seed=1, radius=(7, 10))


def test_report_contents_without_the_network(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "realism_scores", fake_scores)
    real, synthetic = folders
    out = tmp_path / "nested" / "evaluation"
    result = evaluate_folders(real, synthetic, out, crop_size=32, tile_size=32, max_samples=5)
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    assert json.loads((out / "evaluation.json").read_text()) == result
    assert result["real"] == {"source": str(real), "images": 3, "cells": 12, "crops": 5, "tiles": 5}
    assert result["synthetic"]["tiles"] == 5 and result["crops"]["n_real"] == 5
    assert set(result["shape"]["distance"]) == {"area", "eccentricity", "solidity", "perimeter2_over_area"}
    assert result["shape"]["real"]["area"]["mean"] < result["shape"]["synthetic"]["area"]["mean"]
    assert result["shape"]["distance"]["area"] > 1  # radii 5-8 vs 7-10 px
    markdown = (out / "evaluation.md").read_text()
    assert "| cell crops 32 px | 0.0500 ± 0.0010 | 5.0 |" in markdown and "| area |" in markdown
    assert (out / "side_by_side.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".evaluation-")]
    assert "sparse" in result["contacts"]["skipped"]  # a folder of pairs is sparse unless the user says otherwise
    assert "| skipped | the real annotation is sparse" in markdown


def test_touching_cells_are_compared_when_the_real_annotation_is_dense(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "realism_scores", fake_scores)
    real, synthetic = folders
    for folder in folders:  # make cells 1 and 2 of the first image two bright blocks touching along a straight edge
        labels, image = tifffile.imread(folder / "img0_masks.tif"), tifffile.imread(folder / "img0.tif")
        labels[8:24, 22:31], labels[8:24, 31:40] = 1, 2
        image[8:24, 22:40] = 220.0
        tifffile.imwrite(folder / "img0_masks.tif", labels)
        tifffile.imwrite(folder / "img0.tif", image)
    result = evaluate_folders(real, synthetic, tmp_path / "out", crop_size=32, tile_size=32, max_samples=5,
                              dense_real=True)
    for what in ("real", "synthetic"):
        stats = result["contacts"][what]
        assert (stats["cells"], stats["pairs"], stats["dip"]["n"]) == (12, 1, 1)
    markdown = (tmp_path / "out" / "evaluation.md").read_text()
    assert "| touching pairs per cell | 0.083 (1 pairs / 12 cells) | 0.083 (1 pairs / 12 cells) |" in markdown
    dip_row = r"\| dip where they touch, median \(q25-q75\) \| (\d\.\d{3}) \(\1-\1, n=1\) \| (\d\.\d{3}) \(\2-\2, n=1\) \|"
    found = re.search(dip_row, markdown)
    assert found and float(found[1]) == pytest.approx(result["contacts"]["real"]["dip"]["median"], abs=5e-4)


def test_errors_write_nothing(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "realism_scores", fake_scores)
    real, synthetic = folders
    out = tmp_path / "out"
    with pytest.raises(CellcascadeError, match="no such file"):
        evaluate_folders(real, tmp_path / "missing", out)
    with pytest.raises(CellcascadeError, match="crop_size"):
        evaluate_folders(real, synthetic, out, crop_size=4)
    one_cell = tmp_path / "one"
    one_cell.mkdir()
    labels = np.zeros((32, 32), np.uint16)
    labels[10:20, 10:20] = 1
    tifffile.imwrite(one_cell / "a.tif", labels.astype(np.float32))
    tifffile.imwrite(one_cell / "a_masks.tif", labels)
    with pytest.raises(CellcascadeError, match="at least 2"):
        evaluate_folders(real, one_cell, out)
    assert not out.exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(CellcascadeError, match="not a folder"):
        evaluate_folders(real, synthetic, a_file)

    def broken_figure(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_draw_figure", broken_figure)
    with pytest.raises(RuntimeError):
        evaluate_folders(real, synthetic, out, crop_size=32, tile_size=32, max_samples=4)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".evaluation-")]


def test_raw_window_centres_the_cell_and_tiles_cover_images():
    image = np.zeros((40, 50), np.float32)
    image[10, 30] = 1.0
    window = raw_window(image, (10.0, 30.0), 9, 1.0)
    assert window.shape == (9, 9) and window[4, 4] == 1.0 and window.sum() == 1.0
    half = raw_window(image, (10.0, 30.0), 9, 0.5)  # half scale: every second image pixel
    assert half[4, 4] == 1.0 and half[4, 5] == 0.0
    items = [AnnotatedImage(image, (image > 0).astype(np.int32), "a"), AnnotatedImage(image[:10], np.ones((10, 50), np.int32), "b")]
    assert tile_corners(items, 16) == [(0, r, c, 16, 16) for r in (0, 16) for c in (0, 16, 32)] + [
        (1, 0, c, 10, 16) for c in (0, 16, 32)
    ]


def test_3d_data_is_compared_on_annotated_z_slices():
    labels = np.zeros((4, 8, 8), np.int32)
    labels[1:3, 2:5, 2:5] = 7
    volume = AnnotatedImage(np.ones((4, 8, 8), np.float32), labels, "v", dense=True)
    flat = as_2d_items([volume])
    assert [item.name for item in flat] == ["v/z1", "v/z2"] and flat[0].labels.shape == (8, 8) and flat[0].dense


@pytest.mark.slow  # runs the Inception network on 16 small images
def test_report_with_the_network_is_finite(folders, tmp_path):
    real, synthetic = folders
    result = evaluate_folders(real, synthetic, tmp_path / "a", crop_size=32, tile_size=32, max_samples=4, subsets=10)
    for key in ("crops", "tiles"):
        assert math.isfinite(result[key]["kid_mean"]) and math.isfinite(result[key]["fid"])
        assert result[key]["n_real"] == result[key]["n_synthetic"] == result[key]["subset_size"] == 4
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text()) == result
